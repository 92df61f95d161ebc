"""Packed binary kernels against torch float32 on the same thread count, operands prepared
(packed or float) before timing, medians of paired repeats.

gemm N: binary_matmul of packed (N, N) by (N, N) against torch.matmul of float32 (N, N) matrices.
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
from qnnlab.timing import paired_ms


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


def run(sizes: list[int], repeats: int = 7, gemv: int = 16384, bitserial: int = 4096) -> Iterator[dict[str, Any]]:
    torch.manual_seed(0)
    for n in sizes:
        a, b = _pm1(n, n), _pm1(n, n)
        pa, pb = kernels.pack(a), kernels.pack(b)
        yield _row(
            "binary_gemm",
            f"{n}x{n}x{n}",
            lambda: kernels.binary_matmul(pa, pb, n),
            lambda: torch.matmul(a, b.T),
            repeats,
        )
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
