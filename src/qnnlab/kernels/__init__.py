"""Bit-packed kernels for binary and few-bit networks on the CPU.

Public contract: ``pack(x)`` turns +-1 values (..., K) into int64 words (..., ceil(K / 64));
``binary_matmul(a_packed, b_packed, k)`` returns the int32 (M, N) matrix a @ b.T of the unpacked
+-1 matrices, as K - 2 popcount(a XOR b). The kernels are numba-compiled for the host CPU at first
use and run on ``torch.get_num_threads()`` threads.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable

import numpy as np
import torch

from qnnlab.kernels._cores import FreeCores
from qnnlab.kernels.conv import (
    binary_conv2d,
    binary_conv2d_direct,
    direct_filters,
    pack_filters,
    pack_nhwc,
)
from qnnlab.kernels.packing import WORD, check_packed, pack, unpack, words

__all__ = [
    "WORD",
    "binary_conv2d",
    "binary_conv2d_direct",
    "binary_matmul",
    "binary_panels",
    "bitplane_matmul",
    "bitserial_matmul",
    "direct_filters",
    "int8_dot_products",
    "launch",
    "pack",
    "pack_filters",
    "pack_nhwc",
    "on_pixel_grid",
    "parallel_threads",
    "pixel_matmul",
    "popcount_loop",
    "popcount_rate",
    "read_packed",
    "sign_weight_lookups",
    "sign_weight_matmul",
    "sign_weight_panels",
    "threshold_pack",
    "threshold_pack_tables",
    "threshold_tables",
    "unpack",
    "words",
]


SERIAL_BELOW = 1 << 20  # word operations under which one thread beats starting several
TILES_FROM = 1 << 14  # word operations from which register tiles beat sweeping b per row of a


_pool_started = False
_LAUNCHES = threading.Lock()
_set_for = threading.local()  # per Python thread (numba's thread count is): (torch's count, free cores) last applied
_FREE_CORES = FreeCores()


SPIN_COUNT = "10000"  # pause-loop iterations idle pool threads spin before they sleep (libgomp: 300,000)


def _pool() -> None:  # numba imported lazily: it compiles on first use
    """numba's pool, started once and set to torch's thread count, or to the cores other processes
    left free if fewer (``kernels._cores``: a parallel kernel waits for its slowest thread, and one
    on a core another process holds runs in that core's time slices). Unless the user chose
    (``NUMBA_THREADING_LAYER``, ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``), the pool is numba's
    OpenMP layer with a short spin: its idle threads catch the next parallel region of the same
    call at once (about 2 us where numba's workqueue layer, which wakes a sleeping thread for
    every region, measured 150-300 us) and sleep soon after, instead of spinning for
    milliseconds on cores that torch's own OpenMP workers (a second copy of libgomp, which keeps
    its settings) or other processes need. The spin is set in the environment before numba
    loads its libgomp, which reads it once, at load, and removed after."""
    global _pool_started
    threads = torch.get_num_threads(), _FREE_CORES.free()
    if getattr(_set_for, "threads", None) == threads:  # the common case, a few microseconds cheaper
        return
    import numba

    from qnnlab.kernels import _numba

    if not _pool_started:
        with _LAUNCHES:  # two threads' first calls must not both start the pool
            if not _pool_started:  # starting numba's pool resets the process's (torch's) thread count
                spin = not {"NUMBA_THREADING_LAYER", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} & set(os.environ)
                if "NUMBA_THREADING_LAYER" not in os.environ:
                    numba.config.THREADING_LAYER_PRIORITY = ["omp", "workqueue", "tbb"]
                if spin:
                    os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT
                try:
                    _numba.launch_pool(2)
                finally:  # child processes' torch keeps its own default
                    if spin:
                        del os.environ["GOMP_SPINCOUNT"]
                torch.set_num_threads(threads[0])
                _pool_started = True
    wanted = max(1, min(*threads, numba.config.NUMBA_NUM_THREADS))
    if numba.get_num_threads() != wanted:
        numba.set_num_threads(wanted)
    _set_for.threads = threads


def parallel_threads() -> int:
    """Threads the next parallel kernel runs on: torch's count, or the cores other processes left
    free if fewer."""
    import numba

    _pool()
    return numba.get_num_threads()


def launch(kernel, *args):
    """``kernel(*args)`` for a compiled kernel, on ``parallel_threads()``, one call at a time in the
    process: numba's workqueue pool aborts the process when two threads launch work at once."""
    _pool()
    with _LAUNCHES:
        return kernel(*args)


@functools.cache
def int8_dot_products() -> bool:
    """Whether the CPU has integer dot-product instructions (AVX-512 VNNI or AVX-VNNI), on which
    torch's int8 GEMM runs fast; without them (e.g. AMD Zen 2) it is a slow reference loop."""
    import llvmlite.binding as llvm

    features = llvm.get_host_cpu_features()
    return bool(features.get("avx512vnni") or features.get("avxvnni"))


def _words_view(packed: torch.Tensor) -> np.ndarray:
    return packed.contiguous().numpy().view(np.uint64)


def _check_pair(a: torch.Tensor, b: torch.Tensor, k: int) -> None:
    check_packed(a, k, "a_packed")
    check_packed(b, k, "b_packed")
    if a.dim() != 2 or b.dim() != 2:
        raise ValueError(f"a_packed and b_packed must be 2-D (rows, words), got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.device.type != "cpu" or b.device.type != "cpu":
        raise ValueError("the CPU kernels take CPU tensors; move them with .cpu()")


def _checked_out(out: torch.Tensor, m: int, n: int) -> torch.Tensor:
    if out.dtype != torch.int32 or tuple(out.shape) != (m, n) or not out.is_contiguous() or out.device.type != "cpu":
        layout = "" if out.is_contiguous() else ", not contiguous"
        raise ValueError(
            f"out is {out.dtype} {tuple(out.shape)} on {out.device.type}{layout}; "
            f"give a contiguous torch.int32 ({m}, {n}) CPU tensor"
        )
    return out


def binary_matmul(
    a_packed: torch.Tensor,
    b_packed: torch.Tensor,
    k: int,
    b_panels: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """(M, W) and (N, W) packed +-1 rows -> int32 (M, N) = a @ b.T = K - 2 popcount(a XOR b).
    ``b_panels``: ``binary_panels(b_packed)``, made once by a caller that multiplies by b often.
    ``out``: a contiguous int32 (M, N) CPU tensor to write into and return, as torch's ``out=``
    (a fresh large result costs its page faults on every call)."""
    _check_pair(a_packed, b_packed, k)
    from qnnlab.kernels import _numba, _panels

    m, n = a_packed.shape[0], b_packed.shape[0]
    result = torch.empty((m, n), dtype=torch.int32) if out is None else _checked_out(out, m, n)
    target = result.numpy()
    a, b = _words_view(a_packed), _words_view(b_packed)
    if m == 1:
        launch(_numba.xnor_gemv, a, b, k, target)
    elif n < _panels.COLUMNS or m * n * a.shape[1] < TILES_FROM:  # too narrow or too small for register tiles
        rows = _numba.xnor_gemm_rows_serial if m * n * a.shape[1] < SERIAL_BELOW else _numba.xnor_gemm_rows
        launch(rows, a, np.ascontiguousarray(b.T), k, target)
    else:
        if b_panels is None:
            b_panels = binary_panels(b_packed)
        elif b_panels.dtype != torch.int64 or tuple(b_panels.shape) != _panels.panels_shape(b.shape):
            raise ValueError(
                f"b_panels is {b_panels.dtype} {tuple(b_panels.shape)}; make it with binary_panels(b_packed)"
            )
        launch(_panels.gemm, a, _words_view(b_panels), b, k, target)
    return result


def binary_panels(b_packed: torch.Tensor) -> torch.Tensor:
    """b (N, W) packed rows laid out for ``binary_matmul``'s register tiles (``kernels._panels``)."""
    _pool()  # every numba call goes through it first: it keeps torch's thread count
    from qnnlab.kernels import _panels

    return torch.from_numpy(_panels.panels(_words_view(b_packed)).view(np.int64))


def _planes(codes: torch.Tensor, bits: int, name: str) -> torch.Tensor:
    """Unsigned integer codes (R, K) -> packed bit planes (bits, R, W), plane i holding bit i."""
    if codes.dtype.is_floating_point or codes.dtype == torch.bool or codes.dim() != 2:
        raise ValueError(f"{name} must be a 2-D integer tensor of codes, got {codes.dtype} {tuple(codes.shape)}")
    if not 1 <= bits <= 16:
        raise ValueError(f"bits={bits} must be in 1..16")
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= 2**bits):
        raise ValueError(f"{name} holds codes outside 0..{2**bits - 1} for {bits} bits")
    codes = codes.to(torch.int64)
    return torch.stack([pack(((codes >> i) & 1).bool()) for i in range(bits)])


def bitserial_matmul(a_codes: torch.Tensor, b_codes: torch.Tensor, a_bits: int, b_bits: int) -> torch.Tensor:
    """Exact int64 (M, N) = a @ b.T of unsigned k-bit codes by bit-serial decomposition (DoReFa,
    sec. 2.1): a = sum_i 2^i a_i with bit planes a_i, so a . b = sum_ij 2^(i+j) popcount(a_i AND b_j).
    Affine grids (v = s c + z) follow from this and the row sums of the codes."""
    if a_codes.shape[-1] != b_codes.shape[-1]:
        raise ValueError(f"a and b must share K, got {tuple(a_codes.shape)} and {tuple(b_codes.shape)}")
    planes_a, planes_b = _planes(a_codes, a_bits, "a_codes"), _planes(b_codes, b_bits, "b_codes")
    weights = np.array([[1 << (i + j) for j in range(b_bits)] for i in range(a_bits)], dtype=np.int64)
    return _and_planes(planes_a, planes_b, weights)


def _and_planes(planes_a: torch.Tensor, planes_b: torch.Tensor, weights: np.ndarray) -> torch.Tensor:
    """sum_pq weights[p, q] popcount(a_p AND b_q) for bit planes a (P, M, W) and b (Q, N, W), int64
    (M, N). From a few rows up by the register-tiled XOR kernel, with popcount(a AND b) =
    (popcount(a) + popcount(b) - popcount(a XOR b)) / 2: the popcounts of each plane's rows are
    rank-one terms, and one pass (``_panels.weighted_plane_counts``) sums every pair's weighted
    XOR counts."""
    from qnnlab.kernels import _numba, _panels

    a, b = _words_view(planes_a), _words_view(planes_b)
    m, n = a.shape[1], b.shape[1]
    if m < _panels.ROWS or n < _panels.COLUMNS:
        out = np.empty((m, n), dtype=np.int64)
        launch(_numba.and_gemm_planes, a, b, weights, out)
        return torch.from_numpy(out)
    rows = sum(int(w) * _row_popcounts(a[p]) for p, w in enumerate(weights.sum(axis=1)))
    columns = sum(int(w) * _row_popcounts(b[q]) for q, w in enumerate(weights.sum(axis=0)))
    panels = np.stack([_panels.panels(plane) for plane in b])
    twice = np.empty((m, n), dtype=np.int64)  # sum_pq w_pq (popcount(a_p) + popcount(b_q) - XOR count)
    launch(_panels.weighted_plane_counts, a, panels, b, np.ascontiguousarray(-weights, dtype=np.int64), twice)
    launch(_panels.halve_with_margins, twice, rows, columns)
    return torch.from_numpy(twice)


def _row_popcounts(words: np.ndarray) -> np.ndarray:
    from qnnlab.kernels import _panels

    out = np.empty(words.shape[0], dtype=np.int64)
    launch(_panels.row_popcounts, words, out)
    return out


def bitplane_matmul(x_codes: torch.Tensor, w_packed: torch.Tensor, k: int, bits: int = 8) -> torch.Tensor:
    """The QNN paper's first layer: unsigned ``bits``-bit inputs (M, K) times +-1 weights (packed
    (N, W)) as a sum over the input's bit planes, s = sum_i 2^i (x_i . w), each plane product an
    AND-popcount: x_i . w = 2 popcount(x_i AND w+) - popcount(x_i). Returns int64 (M, N)."""
    check_packed(w_packed, k, "w_packed")
    if x_codes.dim() != 2 or x_codes.shape[1] != k:
        raise ValueError(f"x_codes must be (M, {k}), got {tuple(x_codes.shape)}")
    planes = _planes(x_codes, bits, "x_codes")
    ones = pack(torch.ones(1, k)).expand(w_packed.shape[0], -1)
    both = torch.stack([w_packed, ones])  # plane 0: where the weight is +1; plane 1: everywhere
    weights = np.array([[2 << i, -(1 << i)] for i in range(bits)], dtype=np.int64)
    return _and_planes(planes, both.contiguous(), weights)


def pixel_matmul(codes: torch.Tensor, w_packed_t: torch.Tensor, k: int, bits: int = 8) -> torch.Tensor:
    """``bitplane_matmul`` fused for inference: uint8 codes (M, K) and +-1 weights packed and
    transposed (W, N); the bit planes are built per row inside the kernel. int64 (M, N)."""
    if codes.dtype != torch.uint8 or codes.dim() != 2 or codes.shape[1] != k:
        raise ValueError(f"codes must be uint8 (M, {k}), got {codes.dtype} {tuple(codes.shape)}")
    if w_packed_t.dtype != torch.int64 or w_packed_t.dim() != 2 or w_packed_t.shape[0] != words(k):
        raise ValueError(f"weights must be packed and transposed ({words(k)}, N), got {tuple(w_packed_t.shape)}")
    from qnnlab.kernels import _numba

    m, n = codes.shape[0], w_packed_t.shape[1]
    out = np.empty((m, n), dtype=np.int64)
    codes_np, w = codes.contiguous().numpy(), _words_view(w_packed_t)
    chunk = max(1, (1 << 24) // (8 * bits * n))  # rows whose scratch fits in 16 MiB
    for start in range(0, m, chunk):
        rows = codes_np[start : start + chunk]
        planes = np.zeros((len(rows), bits, w.shape[0]), dtype=np.uint64)
        sums = np.zeros((len(rows), bits, n), dtype=np.uint64)
        launch(_numba.pixel_planes_matmul, rows, w, k, bits, planes, sums, out[start : start + chunk])
    return torch.from_numpy(out)


def threshold_pack(
    y: torch.Tensor, threshold: torch.Tensor, positive: torch.Tensor, constant: torch.Tensor
) -> torch.Tensor:
    """Packed sign bits of batch norm applied to y (M, N): see ``qnnlab.runtime.ops`` (threshold)."""
    if y.dim() != 2 or not y.dtype.is_floating_point and y.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"y must be a 2-D tensor of pre-activations, got {y.dtype} {tuple(y.shape)}")
    m, n = y.shape
    for name, table in (("threshold", threshold), ("positive", positive), ("constant", constant)):
        if table.dim() != 1 or len(table) != n:
            raise ValueError(f"{name} must hold one value per column of y ({n}), got shape {tuple(table.shape)}")
    if positive.dtype != torch.bool:
        raise ValueError(f"positive must be a bool tensor, got {positive.dtype}")
    return threshold_pack_tables(y, *threshold_tables(threshold, positive, constant))


def threshold_tables(
    threshold: torch.Tensor, positive: torch.Tensor, constant: torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """(sign, bound) with bit = (sign * y >= bound) per column: +-1 and +-threshold where the
    batch-norm scale is positive / negative, 0 and -1 / +1 where it is zero (a constant +1 / -1)."""
    sign = torch.where(constant >= 0, 0.0, torch.where(positive, 1.0, -1.0)).double()
    bound = torch.where(constant >= 0, torch.where(constant > 0, -1.0, 1.0).double(), sign * threshold.double())
    return sign.numpy(), bound.numpy()


def threshold_pack_tables(y: torch.Tensor, sign: np.ndarray, bound: np.ndarray) -> torch.Tensor:
    """``threshold_pack`` with the tables of ``threshold_tables`` made once (the runtime's path);
    float32 rows of whole words take vector compares (``_float_tiles.threshold_pack_rows``)."""
    from qnnlab.kernels import _float_tiles, _numba

    m, n = y.shape
    if len(sign) != n or len(bound) != n:
        raise ValueError(f"threshold tables hold {len(sign)} and {len(bound)} values for {n} columns")
    out = np.empty((m, words(n)), dtype=np.uint64)
    whole_words = y.dtype == torch.float32 and n % WORD == 0
    kernel = _float_tiles.threshold_pack_rows if whole_words else _numba.threshold_pack
    launch(kernel, y.contiguous().numpy(), sign, bound, out)
    return torch.from_numpy(out.view(np.int64))


@functools.cache  # asking LLVM for the host's features takes about half a millisecond
def sign_weight_lookups() -> bool:
    """Whether numba compiles for this CPU (no NUMBA_CPU_NAME override) and it has the AVX-512
    permutes (``vpermps``, ``vpermw``) the table-lookup weight-only products need
    (``kernels._lookup``); elsewhere the masked additions run."""
    import llvmlite.binding as llvm
    from numba.core import config

    if config.CPU_NAME not in (None, "host"):
        return False
    features = llvm.get_host_cpu_features()
    return bool(features.get("avx512f") and features.get("avx512bw"))


def sign_weight_panels(w_packed: torch.Tensor, k: int, integer: bool) -> torch.Tensor | None:
    """+-1 weights packed (N, W) laid out for ``sign_weight_matmul``'s table lookups, for int8
    inputs (``integer``) or float inputs; None on a CPU without them (``sign_weight_lookups``)."""
    check_packed(w_packed, k, "w_packed")
    if w_packed.dim() != 2:
        raise ValueError(f"w_packed must be 2-D (rows, words), got {tuple(w_packed.shape)}")
    if not sign_weight_lookups():
        return None
    from qnnlab.kernels import _lookup

    lanes = _lookup.weight_panels(_words_view(w_packed), 16 if integer else 32)
    return torch.from_numpy(lanes.view(np.int16 if integer else np.int32))


def sign_weight_matmul(
    x: torch.Tensor, w_packed: torch.Tensor, k: int, panels: torch.Tensor | None = None
) -> torch.Tensor:
    """BinaryConnect inference: real activations x (M, K) times +-1 weights packed (N, W), with
    additions only: x . w = 2 (sum of x over the set bits) - sum(x). With ``panels`` (from
    ``sign_weight_panels``, for x's kind) the sums are looked up in tables of each four inputs'
    subset sums (``kernels._lookup``); without, each weight word's bits are the lane masks of
    vector additions of the 64 inputs it covers (``kernels._masked``). float x gives float32
    (M, N) within float rounding; int8 x gives the exact int32 product."""
    check_packed(w_packed, k, "w_packed")
    if x.dim() != 2 or x.shape[1] != k or not (x.dtype.is_floating_point or x.dtype == torch.int8):
        raise ValueError(f"x must be a float or int8 (M, {k}) tensor, got {x.dtype} {tuple(x.shape)}")
    w_words = w_packed.contiguous().numpy().view(np.uint64)
    padded = w_words.shape[1] * WORD
    integer = x.dtype == torch.int8
    xs = x.detach() if integer else x.detach().to(torch.float32)
    xs = xs.contiguous().numpy()
    if padded != k:  # whole words of inputs; the packed tail bits are clear
        xs = np.pad(xs, ((0, 0), (0, padded - k)))
    totals = xs.sum(axis=1, dtype=np.int64 if integer else np.float64).astype(np.int64 if integer else np.float32)
    if panels is None:
        from qnnlab.kernels import _masked

        out = np.empty((x.shape[0], w_words.shape[0]), dtype=np.int32 if integer else np.float32)
        launch(_masked.sign_weight_int if integer else _masked.sign_weight_float, xs, w_words, totals, out)
        return torch.from_numpy(out)
    sums = _looked_up(xs, panels, w_words.shape, integer)[:, : w_words.shape[0]]
    return torch.from_numpy(2 * sums - totals[:, None].astype(sums.dtype))


def _looked_up(xs: np.ndarray, panels: torch.Tensor, shape: tuple[int, int], integer: bool) -> np.ndarray:
    """The sums over set bits of each row of xs, from panels of ``sign_weight_panels``."""
    from qnnlab.kernels import _lookup

    if not sign_weight_lookups():
        raise ValueError("this CPU has no AVX-512 permutes for the table lookups: pass panels=None")
    lane_bits = 16 if integer else 32
    lanes = 512 // lane_bits
    expected = (-(-shape[0] // lanes), shape[1] * WORD // lane_bits, lanes)
    kind = torch.int16 if integer else torch.int32
    if panels.dtype != kind or tuple(panels.shape) != expected:
        raise ValueError(
            f"panels must be sign_weight_panels(w_packed, k, integer={integer}) for {'int8' if integer else 'float'} "
            f"x: {kind} {expected}, got {panels.dtype} {tuple(panels.shape)}"
        )
    tables = np.empty((xs.shape[0], xs.shape[1] // 4, 32 if integer else 16), dtype=np.int16 if integer else np.float32)
    _lookup.subset_sums(xs, tables)  # serial: needs neither the pool nor the launch lock
    out = np.empty((xs.shape[0], expected[0] * lanes), dtype=np.int32 if integer else np.float32)
    launch(_lookup.int_products if integer else _lookup.float_products, tables, panels.contiguous().numpy(), out)
    return out


def read_packed(w_packed: torch.Tensor) -> np.ndarray:
    """One parallel read of the packed words (OR over each row): the least any product that must
    read them does, on the same threads; time it as a bound (``bench gemm``'s ``stream_ms``)."""
    from qnnlab.kernels import _masked

    words = _words_view(w_packed)
    out = np.empty(words.shape[0], dtype=np.uint64)
    launch(_masked.read_words, words, out)
    return out


def _loop_rates(repeats: int, steps: int) -> dict[tuple[int, int], float]:
    """Each loop shape of ``kernels._rates``: its best rate over ``repeats`` runs (binary
    multiply-accumulates per second, every kernel thread counted); ``steps`` is the count of the
    largest shape's steps, the others run as many multiply-accumulates."""
    import time

    import numba

    _pool()
    from qnnlab.kernels import _rates

    out = np.empty(numba.get_num_threads(), dtype=np.uint64)
    largest = max(_rates.macs_per_step(*shape) for shape in _rates.SHAPES)
    rates = {}
    for shape, run_loops in _rates.RUNNERS.items():
        shape_steps = steps * largest // _rates.macs_per_step(*shape)
        launch(run_loops, shape_steps // 8, out)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            launch(run_loops, shape_steps, out)
            times.append(time.perf_counter() - start)
        rates[shape] = len(out) * shape_steps * _rates.macs_per_step(*shape) / min(times)
    return rates


def popcount_rate(repeats: int = 5, steps: int = 1 << 21) -> float:
    """Binary multiply-accumulates per second that XOR, popcount and add reach on registers alone
    (``kernels._rates``, the best of its loop shapes), on the threads the kernels run on
    (``parallel_threads``: torch's count, fewer where other processes hold cores): the arithmetic
    bound of a GEMM."""
    return max(_loop_rates(repeats, steps).values())


def popcount_loop(macs: int) -> Callable[[], int]:
    """The register-only loop of ``popcount_rate`` in its fastest shape, sized to about ``macs``
    binary multiply-accumulates over the kernel threads: each call runs it and returns the count
    it ran. Timed in alternation with a kernel of as many, it gives the bound under the same
    host load, round by round, where one measurement before the kernel's may catch a calmer or
    busier moment."""
    if isinstance(macs, bool) or not isinstance(macs, int) or macs < 1:
        raise ValueError(f"macs={macs!r}: give the positive count of multiply-accumulates to match, e.g. n**3")
    import numba

    from qnnlab.kernels import _rates

    rates = _loop_rates(3, 1 << 18)
    shape = max(rates, key=rates.get)
    out = np.empty(numba.get_num_threads(), dtype=np.uint64)
    per_step = len(out) * _rates.macs_per_step(*shape)
    steps = max(1, macs // per_step)

    def loop() -> int:
        launch(_rates.RUNNERS[shape], steps, out)
        return steps * per_step

    return loop


def on_pixel_grid(x: torch.Tensor | np.ndarray) -> bool:
    """Whether every value of x is on the 8-bit pixel grid x = c / 127.5 - 1, c in 0..255 (within
    1e-3 of a code, in float32), and so finite."""
    from qnnlab.kernels import _numba

    if not isinstance(x, np.ndarray):
        x = x.detach().to(torch.float32).contiguous().numpy()
    # a serial kernel: called directly, it needs neither numba's pool nor the launch lock
    return bool(_numba.on_pixel_grid(np.ascontiguousarray(x, dtype=np.float32).reshape(-1)))
