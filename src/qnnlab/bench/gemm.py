"""Packed binary kernels against torch float32 and torch's int8 GEMM (``torch._int_mm``) on the
same thread count, operands prepared (packed, float or int8) before timing, timed in interleaved
rounds (medians); each row names the CPU.

gemm N: binary_matmul of packed (N, N) by (N, N) against float32 and int8 (N, N) products, with
the binary multiply-accumulates per second it reaches.
gemv K: one packed row against a (K, K) packed weight matrix (weights larger than the last-level
cache in float32: 1 GiB at K = 16384) against a float32 matrix-vector product; and a real-valued
row against the same +-1 weights (BinaryConnect inference, additions only).
bitserial N: 2-bit x 2-bit codes by bit-serial AND-popcount against float32 N^3.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from qnnlab import kernels
from qnnlab.timing import interleaved_ms, paired_ms, versus


def _pm1(*shape: int) -> torch.Tensor:
    return torch.where(torch.rand(*shape) < 0.5, -1.0, 1.0)


def _row(name: str, shape: str, candidate, baseline, repeats: int) -> dict[str, Any]:
    q_ms, b_ms, speedup = paired_ms(candidate, baseline, repeats)
    return {
        "name": name,
        "shape": shape,
        "qnnlab_ms": round(q_ms, 4),
        "baseline_ms": round(b_ms, 4),
        "speedup": round(speedup, 2),
        "threads": torch.get_num_threads(),
    }


def _gemm_row(n: int, repeats: int) -> dict[str, Any]:
    a, b = _pm1(n, n), _pm1(n, n)
    pa, pb = kernels.pack(a), kernels.pack(b)
    a8, b8t = a.to(torch.int8), b.to(torch.int8).T.contiguous()
    baselines = {"torch-float32": lambda: torch.matmul(a, b.T), "torch-int8": lambda: torch._int_mm(a8, b8t)}
    try:
        torch._int_mm(a8, b8t)
    except (AttributeError, RuntimeError):  # torch's int8 GEMM wants sizes above 16 and multiples of 8
        del baselines["torch-int8"]
    q_ms, base_ms, ratios = interleaved_ms(lambda: kernels.binary_matmul(pa, pb, n), baselines, repeats)
    return {
        "name": "binary_gemm",
        "shape": f"{n}x{n}x{n}",
        **versus(q_ms, base_ms, ratios),
        "binary_macs_per_second": round(n**3 / (q_ms / 1e3)),
        "threads": torch.get_num_threads(),
    }


def run(sizes: list[int], repeats: int = 7, gemv: int = 16384, bitserial: int = 4096) -> Iterator[dict[str, Any]]:
    torch.manual_seed(0)
    for n in sizes:
        yield _gemm_row(n, repeats)
    if gemv:
        w = _pm1(gemv, gemv)
        x = _pm1(1, gemv)
        pw, px = kernels.pack(w), kernels.pack(x)
        yield _row(
            "binary_gemv",
            f"1x{gemv}x{gemv}",
            lambda: kernels.binary_matmul(px, pw, gemv),
            lambda: torch.matmul(x, w.T),
            repeats,
        )
        real = torch.randn(1, gemv)
        yield _row(
            "weight_only_gemv",
            f"1x{gemv}x{gemv}",
            lambda: kernels.sign_weight_matmul(real, pw, gemv),
            lambda: torch.matmul(real, w.T),
            repeats,
        )
        del w
    if bitserial:
        a = torch.randint(0, 4, (bitserial, bitserial))
        b = torch.randint(0, 4, (bitserial, bitserial))
        fa, fb = a.float(), b.float()
        planes_a, planes_b = kernels._planes(a, 2, "a"), kernels._planes(b, 2, "b")
        weights = np.array([[1, 2], [2, 4]], dtype=np.int64)
        yield _row(
            "bitserial_2x2_gemm",
            f"{bitserial}x{bitserial}x{bitserial}",
            lambda: kernels._and_planes(planes_a, planes_b, weights),
            lambda: torch.matmul(fa, fb.T),
            max(3, repeats // 2),
        )
