"""Numba kernels, compiled for the host CPU at first use (so AVX-512 VPOPCNTDQ vector popcounts
where the CPU has them). Arrays are numpy views of the torch tensors (uint64 words)."""

from __future__ import annotations

import types as types_module

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

GRID_BLOCK = 4096


def parallel_and_serial(kernel):
    """(parallel, serial) compiled forms of ``kernel``. The serial copy is a function of its own
    name, so numba's on-disk cache (keyed by name and bytecode, not by ``parallel``) keeps the two
    builds apart instead of handing one the other's."""
    serial = types_module.FunctionType(kernel.__code__, kernel.__globals__, kernel.__name__ + "_serial")
    serial.__qualname__ = kernel.__qualname__ + "_serial"
    return njit(parallel=True, cache=True, nogil=True)(kernel), njit(cache=True, nogil=True)(serial)


@intrinsic
def popcount(typingctx, x):
    """llvm.ctpop.i64: compiles to popcnt, or vpopcntq when the loop is vectorized."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        fn = builder.module.declare_intrinsic("llvm.ctpop", [ir.IntType(64)])
        return builder.call(fn, args)

    return sig, codegen


def _xnor_gemm_rows(a, b_t, k, out):
    """The product with b transposed (W, N): the inner loop runs over the N columns, so it
    vectorizes (8 words per vpopcntq) however few words a row has; for products too narrow (N <
    32) or too small for the register tiles of ``kernels._panels``."""
    m, w = a.shape
    n = b_t.shape[1]
    for i in prange(m):
        row = out[i]  # accumulates popcounts in place: no scratch allocation per row
        row[:] = 0
        for t in range(w):
            word = a[i, t]
            for j in range(n):
                row[j] += np.int32(popcount(word ^ b_t[t, j]))
        for j in range(n):
            row[j] = k - 2 * row[j]


xnor_gemm_rows = njit(parallel=True, fastmath=True, cache=True, nogil=True)(_xnor_gemm_rows)
# below a few million word operations, starting threads costs more than they save
xnor_gemm_rows_serial = njit(parallel=False, fastmath=True, cache=True, nogil=True)(_xnor_gemm_rows)


@njit(parallel=True, fastmath=True, cache=True, nogil=True)
def xnor_gemv(a, b, k, out):
    """One packed row a (1, W) against every row of b (N, W), parallel over the rows of b."""
    w = a.shape[1]
    n = b.shape[0]
    for j in prange(n):
        acc = np.uint64(0)
        for t in range(w):
            acc += popcount(a[0, t] ^ b[j, t])
        out[0, j] = k - 2 * np.int64(acc)


@njit(parallel=True, fastmath=True, cache=True, nogil=True)
def and_gemm_planes(a, b, weights, out):
    """out[i, j] = sum over plane pairs (p, q) of weights[p, q] popcount(a[p, i] AND b[q, j]).

    a: (P, M, W) bit planes, b: (Q, N, W) bit planes; weights (P, Q) int64 (powers of two, signs)."""
    planes_a, m, w = a.shape
    planes_b, n = b.shape[0], b.shape[1]
    for i in prange(m):
        for j in range(n):
            total = np.int64(0)
            for p in range(planes_a):
                for q in range(planes_b):
                    acc = np.uint64(0)
                    for t in range(w):
                        acc += popcount(a[p, i, t] & b[q, j, t])
                    total += weights[p, q] * np.int64(acc)
            out[i, j] = total


@njit(parallel=True, fastmath=True, cache=True, nogil=True)
def pixel_planes_matmul(codes, w_t, k, bits, planes, sums, out):
    """out[i, j] = sum_t codes[i, t] w[j, t] for unsigned ``bits``-bit codes and +-1 weights given
    transposed and packed (W, N). Per row the codes are split into bit planes x_p, and
    x_p . w = 2 popcount(x_p AND w+) - popcount(x_p); the inner loop runs over the N columns.
    ``planes`` (M, bits, W) and ``sums`` (M, bits, N) are zeroed scratch, one slice per row, given
    by the caller: arrays allocated inside a parallel loop may be hoisted and shared by threads."""
    m = codes.shape[0]
    words, n = w_t.shape
    for i in prange(m):
        for t in range(k):
            c = np.int64(codes[i, t])
            for p in range(bits):
                if (c >> p) & 1:
                    planes[i, p, t // 64] |= np.uint64(1) << np.uint64(t % 64)
        for p in range(bits):
            for t in range(words):
                word = planes[i, p, t]
                for j in range(n):  # vectorized over the columns, as in xnor_gemm_rows
                    sums[i, p, j] += popcount(word & w_t[t, j])
        base = np.int64(0)
        for p in range(bits):
            for t in range(words):
                base += np.int64(popcount(planes[i, p, t])) << p
        for j in range(n):
            total = -base
            for p in range(bits):
                total += np.int64(sums[i, p, j]) << (p + 1)
            out[i, j] = total


@njit(parallel=True, fastmath=True, cache=True, nogil=True)
def threshold_pack(y, sign, bound, out):
    """Batch norm + sign fused, branch-free: bit j of row i is (sign[j] * y >= bound[j]); sign is
    +1 / -1 for a positive / negative batch-norm scale (bound = +-threshold) and 0 where the scale
    is 0 (bound -1 for a constant +1, +1 for a constant -1). Written straight into packed words."""
    m, n = y.shape
    for i in prange(m):
        for wi in range(out.shape[1]):
            word = np.uint64(0)
            start = wi * 64
            for b in range(min(64, n - start)):
                bit = np.float64(y[i, start + b]) * sign[start + b] >= bound[start + b]
                word |= np.uint64(bit) << np.uint64(b)
            out[i, wi] = word


@njit(parallel=True, cache=True)
def launch_pool(n):
    """A trivial parallel loop: running it once starts numba's thread pool."""
    total = 0
    for i in prange(n):
        total += i
    return total


@njit(inline="always")
def conv_popcounts(x, w_t, b, oy, ox, stride, padding, acc):
    """acc[o] = sum of popcount(x XOR w) over the taps of output (oy, ox) inside the image, for
    every output channel o (the innermost loop, contiguous, vectorises); returns the tap count."""
    height, width, wc = x.shape[1], x.shape[2], x.shape[3]
    kh, kw, n_out = w_t.shape[0], w_t.shape[1], w_t.shape[3]
    acc[:] = 0
    taps = 0
    for dy in range(kh):
        iy = oy * stride - padding + dy
        if iy < 0 or iy >= height:
            continue
        for dx in range(kw):
            ix = ox * stride - padding + dx
            if ix < 0 or ix >= width:
                continue
            taps += 1
            for t in range(wc):
                xv = x[b, iy, ix, t]
                for o in range(n_out):
                    acc[o] += popcount(xv ^ w_t[dy, dx, t, o])
    return taps


@njit(parallel=True, fastmath=True, cache=True, nogil=True)
def binary_conv_direct(x, w_t, channels, stride, padding, out):
    """Direct binary convolution of channel-packed NHWC bits x (B, H, W, Wc) with filters laid out
    (kh, kw, Wc, O): out[b, oy, ox, o] = sum over the taps inside the image of
    channels - 2 popcount(x XOR w). Taps on the zero padding add nothing, exactly as zero padding
    of +-1 values does, so no correction is needed and nothing is copied."""
    n_out = w_t.shape[3]
    out_h, out_w = out.shape[1], out.shape[2]
    for row in prange(x.shape[0] * out_h):
        b, oy = row // out_h, row % out_h
        acc = np.zeros(n_out, dtype=np.int64)
        for ox in range(out_w):
            taps = conv_popcounts(x, w_t, b, oy, ox, stride, padding, acc)
            for o in range(n_out):
                out[b, oy, ox, o] = taps * channels - 2 * acc[o]


@njit(cache=True, nogil=True, fastmath={"reassoc"})
def on_pixel_grid(x):
    """Whether every value of x (float32, flat) is c / 127.5 - 1 for an integer c in 0..255, within
    1e-3 of a code; NaN and infinity fail the comparisons. Blocks of ``GRID_BLOCK`` values counted
    without branches, stopping after the first block with a miss. Each block is a slice indexed
    from 0 (indexing x from a block's start gathered, twice as slow) and its count a float32
    (exact below 2^24), which LLVM may reassociate into vector lanes; numba adds integers as int64,
    four to a vector. Reassociation may also fold the two additions of 127.5 and 0.5 into one,
    which moves ``nearest`` only for codes half-way between two, and those fail either way."""
    n = x.shape[0]
    for start in range(0, n, GRID_BLOCK):
        block = x[start : min(n, start + GRID_BLOCK)]
        on = np.float32(0)
        for i in range(block.shape[0]):
            code = block[i] * np.float32(127.5) + np.float32(127.5)
            nearest = np.floor(code + np.float32(0.5))
            fits = (abs(code - nearest) <= np.float32(1e-3)) & (nearest >= np.float32(0)) & (nearest <= np.float32(255))
            on += np.float32(fits)
        if on != block.shape[0]:
            return False
    return True
