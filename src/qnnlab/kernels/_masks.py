"""Numba kernels of products under per-sample random weight masks (DropConnect) that never store
the masks: the keep bits of weights (o, 64 q .. 64 q + 63) for sample b are drawn from counter-based
hashes of (seed, b, o, q, plane), as few bit planes as the keep probability needs (one for 1/2),
so the forward pass and both backward products regenerate the same masks from the seed alone
(memory O(1) instead of batch x weights). The products accumulate in any order (fastmath): float
sums that match an explicit masked product to rounding. A dropped weight adds nothing, not even a
NaN it holds; NaN and infinity in kept weights and inputs propagate."""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

M1 = np.uint64(0xBF58476D1CE4E5B9)
M2 = np.uint64(0x94D049BB133111EB)
GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@njit(inline="always")
def _mix(z):
    """splitmix64's finaliser: a bijection of 64-bit words whose output bits look independent."""
    z = (z ^ (z >> np.uint64(30))) * M1
    z = (z ^ (z >> np.uint64(27))) * M2
    return z ^ (z >> np.uint64(31))


ONES = np.uint64(0xFFFFFFFFFFFFFFFF)
REASSOCIATE = {"reassoc", "contract"}  # sums in any order (vectorised), NaN and infinity still propagate
SAMPLES_PER_BLOCK = 8  # input gradient: samples that share each block of weight rows while it is in L2
ROWS_PER_BLOCK = 16


@njit(inline="always")
def _keep_words(seed, b, o, n_out, planes, threshold, words, equal):
    """words[q]: bit j set when weight 64 q + j of row o is kept for sample b. Each weight's draw is
    a ``planes``-bit number U, kept when U < threshold (probability threshold / 2^planes); the
    comparison runs bit-sliced, 64 weights at once, on ``planes`` hashed 64-bit words (one bit of
    every weight each): keep 1/2 costs one hash per 64 weights. Each plane's loop over q is
    branch-free, so it runs on vectors; ``equal`` is scratch of words' length."""
    base = (np.uint64(b) * np.uint64(n_out) + np.uint64(o)) * np.uint64(words.shape[0])
    stride = np.uint64(planes)
    for q in range(words.shape[0]):
        words[q] = np.uint64(0) if planes > 0 else ONES
        equal[q] = ONES
    for k in range(planes):  # most significant bit first
        salt = np.uint64(k + 1)
        if (threshold >> np.uint64(planes - 1 - k)) & np.uint64(1):
            for q in range(words.shape[0]):
                u = _mix(seed + GOLDEN * ((base + np.uint64(q)) * stride + salt))
                words[q] |= equal[q] & ~u
                equal[q] &= u
        else:
            for q in range(words.shape[0]):
                equal[q] &= ~_mix(seed + GOLDEN * ((base + np.uint64(q)) * stride + salt))


LANES = 16  # float32 lanes per 512-bit vector: a keep word covers four
FLAGS = tuple(sorted(REASSOCIATE))  # the same freedom, as LLVM instruction flags


def _masked_loop(builder, words_addr, count, body) -> None:
    """For each keep word q < ``count`` and each of its four 16-bit parts p: ``body(at, mask)``, at
    = 4 q + p the index of the 16-float vector those bits cover, mask its <16 x i1> (bit j of the
    word is lane j: an AVX-512 mask register, no bit is expanded into a float)."""
    words = builder.inttoptr(words_addr, ir.IntType(64).as_pointer())
    bits = ir.VectorType(ir.IntType(1), 64)
    with cgutils.for_range(builder, count) as loop:
        word = builder.bitcast(builder.load(builder.gep(words, [loop.index])), bits)
        for p in range(64 // LANES):
            lanes = ir.Constant(ir.VectorType(ir.IntType(32), LANES), list(range(p * LANES, (p + 1) * LANES)))
            at = builder.add(builder.mul(loop.index, ir.Constant(count.type, 64 // LANES)), ir.Constant(count.type, p))
            body(at, builder.shuffle_vector(word, ir.Constant(bits, None), lanes))


@intrinsic
def _masked_dot(typingctx, a_address, b_address, words_address, count):
    """sum of a[i] b[i] over the set bits i of ``count`` keep words (float32, 64 per word)."""
    sig = types.float32(types.uintp, types.uintp, types.uintp, types.intp)

    def codegen(context, builder, signature, args):
        a_addr, b_addr, words_addr, count = args
        vector = ir.VectorType(ir.FloatType(), LANES)
        zero = ir.Constant(vector, [0.0] * LANES)
        a, b = (builder.inttoptr(addr, vector.as_pointer()) for addr in (a_addr, b_addr))
        total = cgutils.alloca_once_value(builder, zero)

        def body(at, mask):
            product = builder.fmul(
                builder.load(builder.gep(a, [at]), align=4), builder.load(builder.gep(b, [at]), align=4), flags=FLAGS
            )
            builder.store(builder.fadd(builder.load(total), builder.select(mask, product, zero), flags=FLAGS), total)

        _masked_loop(builder, words_addr, count, body)
        reduce = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(ir.FloatType(), [ir.FloatType(), vector]),
            f"llvm.vector.reduce.fadd.v{LANES}f32",
        )
        return builder.call(reduce, [ir.Constant(ir.FloatType(), 0.0), builder.load(total)], fastmath=FLAGS)

    return sig, codegen


@intrinsic
def _masked_axpy(typingctx, out_address, x_address, alpha, words_address, count):
    """out[i] += alpha x[i] over the set bits i of ``count`` keep words (float32, 64 per word)."""
    sig = types.void(types.uintp, types.uintp, types.float32, types.uintp, types.intp)

    def codegen(context, builder, signature, args):
        out_addr, x_addr, alpha, words_addr, count = args
        vector = ir.VectorType(ir.FloatType(), LANES)
        zero = ir.Constant(vector, [0.0] * LANES)
        out, x = (builder.inttoptr(addr, vector.as_pointer()) for addr in (out_addr, x_addr))
        first = builder.insert_element(ir.Constant(vector, None), alpha, ir.Constant(ir.IntType(32), 0))
        spread = builder.shuffle_vector(
            first, ir.Constant(vector, None), ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES)
        )

        def body(at, mask):
            target = builder.gep(out, [at])
            scaled = builder.fmul(spread, builder.load(builder.gep(x, [at]), align=4), flags=FLAGS)
            added = builder.fadd(builder.load(target, align=4), builder.select(mask, scaled, zero), flags=FLAGS)
            builder.store(added, target, align=4)

        _masked_loop(builder, words_addr, count, body)
        return context.get_dummy_value()

    return sig, codegen


@njit(inline="always")
def _dot(a, b, words):
    """sum of a[i] b[i] where bit i of ``words`` is set: whole words on mask registers, the rest one by one."""
    full = a.shape[0] // 64
    acc = _masked_dot(a.ctypes.data, b.ctypes.data, words.ctypes.data, full)
    for i in range(64 * full, a.shape[0]):
        if (words[full] >> np.uint64(i - 64 * full)) & np.uint64(1):
            acc += a[i] * b[i]
    return acc


@njit(inline="always")
def _axpy(out, alpha, x, words):
    """out[i] += alpha x[i] where bit i of ``words`` is set."""
    full = x.shape[0] // 64
    _masked_axpy(out.ctypes.data, x.ctypes.data, alpha, words.ctypes.data, full)
    for i in range(64 * full, x.shape[0]):
        if (words[full] >> np.uint64(i - 64 * full)) & np.uint64(1):
            out[i] += alpha * x[i]


@njit(parallel=True, fastmath=REASSOCIATE, cache=True, nogil=True)
def masked_forward(x, w, seed, planes, threshold, scale, out):
    """out[b, o] = scale * sum_i keep(b, o, i) w[o, i] x[b, i]; the rows of w split across threads,
    each row meeting every sample while it is in L1."""
    batch, n_in = x.shape
    n_out = w.shape[0]
    for o in prange(n_out):
        words, equal = np.empty((n_in + 63) // 64, dtype=np.uint64), np.empty((n_in + 63) // 64, dtype=np.uint64)
        for b in range(batch):
            _keep_words(seed, b, o, n_out, planes, threshold, words, equal)
            out[b, o] = _dot(w[o], x[b], words) * scale


@njit(parallel=True, fastmath=REASSOCIATE, cache=True, nogil=True)
def masked_input_grad(grad, w, seed, planes, threshold, scale, out):
    """out[b, i] = scale * sum_o keep(b, o, i) w[o, i] grad[b, o]; the samples split across threads
    in groups that share each block of weight rows while it is in L2."""
    batch, n_out = grad.shape
    n_in = w.shape[1]
    for first in prange((batch + SAMPLES_PER_BLOCK - 1) // SAMPLES_PER_BLOCK):
        words, equal = np.empty((n_in + 63) // 64, dtype=np.uint64), np.empty((n_in + 63) // 64, dtype=np.uint64)
        samples = range(first * SAMPLES_PER_BLOCK, min(batch, (first + 1) * SAMPLES_PER_BLOCK))
        for b in samples:
            out[b, :] = 0.0
        for block in range(0, n_out, ROWS_PER_BLOCK):
            for b in samples:
                for o in range(block, min(n_out, block + ROWS_PER_BLOCK)):
                    _keep_words(seed, b, o, n_out, planes, threshold, words, equal)
                    _axpy(out[b], grad[b, o], w[o], words)
        for b in samples:
            out[b, :] *= scale


@njit(parallel=True, fastmath=REASSOCIATE, cache=True, nogil=True)
def masked_weight_grad(grad, x, seed, planes, threshold, scale, out):
    """out[o, i] = scale * sum_b keep(b, o, i) grad[b, o] x[b, i]; the rows of out split across threads."""
    batch, n_out = grad.shape
    n_in = x.shape[1]
    for o in prange(n_out):
        words, equal = np.empty((n_in + 63) // 64, dtype=np.uint64), np.empty((n_in + 63) // 64, dtype=np.uint64)
        out[o, :] = 0.0
        for b in range(batch):
            _keep_words(seed, b, o, n_out, planes, threshold, words, equal)
            _axpy(out[o], grad[b, o], x[b], words)
        out[o, :] *= scale


@njit(parallel=True, cache=True, nogil=True)
def mask_bits(seed, planes, threshold, out):
    """The masks themselves, out[b, o, i] = keep(b, o, i): for tests and small references only."""
    batch, n_out, n_in = out.shape
    for b in prange(batch):
        words, equal = np.empty((n_in + 63) // 64, dtype=np.uint64), np.empty((n_in + 63) // 64, dtype=np.uint64)
        for o in range(n_out):
            _keep_words(seed, b, o, n_out, planes, threshold, words, equal)
            for i in range(n_in):
                out[b, o, i] = (words[i // 64] >> np.uint64(i % 64)) & np.uint64(1) == np.uint64(1)
