"""Packed binary kernels against torch float32 and torch's int8 GEMM (``torch._int_mm``, where the
CPU has VNNI: elsewhere it is a reference loop no one would deploy) on the same thread count,
operands prepared (packed, float or int8) before timing, timed in interleaved rounds (medians);
each row names the CPU. GEMMs write into outputs allocated once (``out=``, torch's too): a fresh
64 MiB result per call costs page faults that are not the product's arithmetic.

gemm N: binary_matmul of packed (N, N) by (N, N) against float32 and int8 (N, N) products, with
the binary multiply-accumulates per second it reaches and their share of the machine's measured
arithmetic bound (``kernels.popcount_rate``: XOR, popcount and add on registers, same threads;
the best of its repeats). ``of_bound`` is the median over rounds that time the GEMM and that
register loop of as many multiply-accumulates in turn (``kernels.popcount_loop``): host load
hits both alike, where a bound measured once, before, may have caught a calmer moment than the
GEMM's runs. ``of_bound_best`` is the GEMM's best back-to-back run against the bound's best.
gemv K: one packed row against a (K, K) packed weight matrix (weights larger than the last-level
cache in float32: 1 GiB at K = 16384) against a float32 matrix-vector product; and float32 and
int8 rows against the same +-1 weights (BinaryConnect inference, additions only: table lookups
where the CPU has AVX-512, masked additions elsewhere, the row's ``method``) against float32 and
int8 products, beside the time one read of the packed weights takes.
bitserial N: k-bit x k-bit codes (1x1, 2x2, 4x4, 8x1 bits) by bit-serial AND-popcount, one
binary product per pair of bit planes, against float32 and int8 N^3: what an int8 -> int4 shift
costs on binary hardware.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qnnlab import kernels
from qnnlab.timing import best_ms, cold_ms, interleaved_ms, median_ms, paired_ms, versus


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


def _int8_gemm(a: torch.Tensor, b: torch.Tensor) -> dict[str, Any]:
    """{"torch-int8": a @ b.T in torch's int8 GEMM} where it is a baseline a user would pick: on a
    CPU with VNNI, and for sizes it takes (above 16 and multiples of 8). Without VNNI it is a
    reference loop (seconds at 1024^3), slower than float32, and the row leaves it out."""
    if not kernels.int8_dot_products():
        return {}
    a8, b8t = a.to(torch.int8), b.to(torch.int8).T.contiguous()
    try:
        torch._int_mm(a8, b8t)
    except (AttributeError, RuntimeError):
        return {}
    out = torch.empty((a.shape[0], b.shape[0]), dtype=torch.int32)
    return {"torch-int8": lambda: torch._int_mm(a8, b8t, out=out)}


def _gemm_row(n: int, repeats: int, bound: float) -> dict[str, Any]:
    a, b = _pm1(n, n), _pm1(n, n)
    pa, pb = kernels.pack(a), kernels.pack(b)
    products = torch.empty((n, n)), torch.empty((n, n), dtype=torch.int32)
    baselines = {"torch-float32": lambda: torch.matmul(a, b.T, out=products[0]), **_int8_gemm(a, b)}
    panels = kernels.binary_panels(pb)  # b's register-tile layout, made once as a network's weights are
    product = lambda: kernels.binary_matmul(pa, pb, n, panels, out=products[1])  # noqa: E731
    q_ms, base_ms, ratios = interleaved_ms(product, baselines, repeats)
    fastest = best_ms(product, repeats)
    bound_loop = kernels.popcount_loop(n**3)
    _, _, loop_over_product = paired_ms(product, bound_loop, repeats)
    return {
        "name": "binary_gemm",
        "shape": f"{n}x{n}x{n}",
        **versus(q_ms, base_ms, ratios),
        "binary_macs_per_second": round(n**3 / (q_ms / 1e3)),
        "bound_macs_per_second": round(bound),
        "of_bound": round(loop_over_product * n**3 / bound_loop(), 3),
        "of_bound_best": round(n**3 / (fastest / 1e3) / bound, 3),  # best against best, like with like
        "threads": torch.get_num_threads(),
        "qnnlab_threads": kernels.parallel_threads(),  # fewer than torch's where other processes hold cores
    }


def run(
    sizes: list[int], repeats: int = 7, gemv: tuple[int, ...] = (4096, 16384), bitserial: int = 4096
) -> Iterator[dict[str, Any]]:
    torch.manual_seed(0)
    bound = kernels.popcount_rate() if sizes else 0.0
    for n in sizes:
        yield _gemm_row(n, repeats, bound)
    for k in gemv:
        yield from _gemv_rows(k, repeats)
    for a_bits, b_bits in BIT_SERIAL if bitserial else ():
        yield _bitserial_row(bitserial, a_bits, b_bits, max(3, repeats // 2))


def _cache_flush(cap: int = 1 << 30):
    """A function that reads twice the last-level cache's size (from sysfs; 64 MiB where it does
    not say, at most ``cap``) so that what ran before leaves nothing in the caches. It reads and
    writes nothing timed and dirties no line, so no write-back lands in the next timing."""
    sizes = []
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        with contextlib.suppress(OSError, ValueError):
            text = index.read_text().strip()
            sizes.append(int(text[:-1]) * {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[text[-1]])
    buffer = np.ones(min(2 * max(sizes, default=1 << 26), cap) // 8, dtype=np.int64)
    return buffer.max


def _gemv_rows(k: int, repeats: int) -> Iterator[dict[str, Any]]:
    """Batch-1 products with a (K, K) weight matrix: +-1 inputs (XNOR-popcount) against float32,
    then weight-only products (BinaryConnect inference, 1-bit LLM layers) of float32 and of int8
    inputs against torch's float32 and int8 products, and against the time one read of the packed
    weights takes, the bound of a product that must read them: both from memory (``stream_ms``,
    each run after the caches are flushed, as a model's weights arrive) and from cache, run
    back to back (``stream_warm_ms``)."""
    w = _pm1(k, k)
    pw = kernels.pack(w)
    x = _pm1(1, k)
    px = kernels.pack(x)
    yield _row(
        "binary_gemv", f"1x{k}x{k}", lambda: kernels.binary_matmul(px, pw, k), lambda: torch.matmul(x, w.T), repeats
    )
    real, real8 = torch.randn(1, k), torch.randint(-128, 128, (1, k), dtype=torch.int8)
    flush = _cache_flush()
    stream_ms = cold_ms(lambda: kernels.read_packed(pw), flush, repeats)
    stream_warm_ms = median_ms(lambda: kernels.read_packed(pw), repeats)
    baselines = {"torch-float32": lambda: torch.matmul(real, w.T), **_int8_gemm(real8, w)}
    for name, inputs in (("weight_only_gemv", real), ("weight_only_gemv_int8", real8)):
        panels = kernels.sign_weight_panels(pw, k, integer=inputs.dtype == torch.int8)  # made once, as at load
        product = functools.partial(kernels.sign_weight_matmul, inputs, pw, k, panels)
        q_ms, base_ms, ratios = interleaved_ms(product, baselines, repeats)
        cold, warm = cold_ms(product, flush, repeats), median_ms(product, repeats)
        yield {
            "name": name,
            "shape": f"1x{k}x{k}",
            "method": "masked additions" if panels is None else "table lookups",
            **versus(q_ms, base_ms, ratios),
            "from_memory_ms": round(cold, 4),
            "stream_ms": round(stream_ms, 4),
            "times_stream": round(cold / stream_ms, 2),
            "from_cache_ms": round(warm, 4),
            "stream_warm_ms": round(stream_warm_ms, 4),
            "times_stream_warm": round(warm / stream_warm_ms, 2),
            "threads": torch.get_num_threads(),
            "qnnlab_threads": kernels.parallel_threads(),
        }


BIT_SERIAL = ((1, 1), (2, 2), (4, 4), (8, 1))  # activation x weight bits: how k-bit products cost


def _bitserial_row(n: int, a_bits: int, b_bits: int, repeats: int) -> dict[str, Any]:
    """a_bits x b_bits codes multiplied as sum_ij 2^(i+j) popcount(a_i AND b_j) over bit planes
    (planes made before timing), against float32 and int8 products of the same (N, N) matrices."""
    a, b = torch.randint(0, 2**a_bits, (n, n)), torch.randint(0, 2**b_bits, (n, n))
    planes_a, planes_b = kernels._planes(a, a_bits, "a"), kernels._planes(b, b_bits, "b")
    weights = np.array([[1 << (i + j) for j in range(b_bits)] for i in range(a_bits)], dtype=np.int64)
    fa, fb = a.float(), b.float()
    baselines = {
        "torch-float32": lambda: torch.matmul(fa, fb.T),
        **_int8_gemm(a - 2 ** (a_bits - 1), b - 2 ** (b_bits - 1)),
    }
    q_ms, base_ms, ratios = interleaved_ms(lambda: kernels._and_planes(planes_a, planes_b, weights), baselines, repeats)
    return {
        "name": f"bitserial_{a_bits}x{b_bits}_gemm",
        "shape": f"{n}x{n}x{n}",
        **versus(q_ms, base_ms, ratios),
        "binary_products": a_bits * b_bits,
        "threads": torch.get_num_threads(),
    }
