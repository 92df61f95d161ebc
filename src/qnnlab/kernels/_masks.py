"""Numba kernels of products under per-sample random weight masks (DropConnect) that never store
the masks: the keep bits of weights (o, 64 q .. 64 q + 63) for sample b are drawn from counter-based
hashes of (seed, b, o, q, plane), as few bit planes as the keep probability needs (one for 1/2),
so the forward pass and both backward products regenerate the same masks from the seed alone
(memory O(1) instead of batch x weights). The products accumulate in any order (fastmath): float
sums that match an explicit masked product to rounding."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

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
def _keep_words(seed, b, o, n_out, planes, threshold, words):
    """words[q]: bit j set when weight 64 q + j of row o is kept for sample b. Each weight's draw is
    a ``planes``-bit number U, kept when U < threshold (probability threshold / 2^planes); the
    comparison runs bit-sliced, 64 weights at once, on ``planes`` hashed 64-bit words (one bit of
    every weight each): keep 1/2 costs one hash per 64 weights."""
    base = (np.uint64(b) * np.uint64(n_out) + np.uint64(o)) * np.uint64(words.shape[0])
    for q in range(words.shape[0]):
        below = np.uint64(0) if planes > 0 else ONES
        equal = ONES
        for k in range(planes):  # most significant bit first
            u = _mix(seed + GOLDEN * ((base + np.uint64(q)) * np.uint64(planes) + np.uint64(k + 1)))
            if (threshold >> np.uint64(planes - 1 - k)) & np.uint64(1):
                below |= equal & ~u
                equal &= u
            else:
                equal &= ~u
        words[q] = below


@njit(inline="always")
def _keep_floats(seed, b, o, n_out, planes, threshold, words, keep):
    """keep[i] = 1.0 or 0.0, the mask of row o for sample b (``_keep_words``)."""
    _keep_words(seed, b, o, n_out, planes, threshold, words)
    for q in range(words.shape[0]):
        m = words[q]
        for j in range(64):
            keep[64 * q + j] = np.float32((m >> np.uint64(j)) & np.uint64(1))


@njit(parallel=True, fastmath=REASSOCIATE, cache=True, nogil=True)
def masked_forward(x, w, seed, planes, threshold, scale, out):
    """out[b, o] = scale * sum_i keep(b, o, i) w[o, i] x[b, i]; the rows of w split across threads,
    each row meeting every sample while it is in L1."""
    batch, n_in = x.shape
    n_out = w.shape[0]
    for o in prange(n_out):
        words = np.empty((n_in + 63) // 64, dtype=np.uint64)
        keep = np.empty(words.shape[0] * 64, dtype=np.float32)
        for b in range(batch):
            _keep_floats(seed, b, o, n_out, planes, threshold, words, keep)
            acc = np.float32(0.0)
            for i in range(n_in):
                acc += w[o, i] * x[b, i] * keep[i]
            out[b, o] = acc * scale


@njit(parallel=True, fastmath=REASSOCIATE, cache=True, nogil=True)
def masked_input_grad(grad, w, seed, planes, threshold, scale, out):
    """out[b, i] = scale * sum_o keep(b, o, i) w[o, i] grad[b, o]; the samples split across threads
    in groups that share each block of weight rows while it is in L2."""
    batch, n_out = grad.shape
    n_in = w.shape[1]
    for first in prange((batch + SAMPLES_PER_BLOCK - 1) // SAMPLES_PER_BLOCK):
        words = np.empty((n_in + 63) // 64, dtype=np.uint64)
        keep = np.empty(words.shape[0] * 64, dtype=np.float32)
        samples = range(first * SAMPLES_PER_BLOCK, min(batch, (first + 1) * SAMPLES_PER_BLOCK))
        for b in samples:
            out[b, :] = 0.0
        for block in range(0, n_out, ROWS_PER_BLOCK):
            for b in samples:
                for o in range(block, min(n_out, block + ROWS_PER_BLOCK)):
                    _keep_floats(seed, b, o, n_out, planes, threshold, words, keep)
                    g_bo = grad[b, o]
                    for i in range(n_in):
                        out[b, i] += w[o, i] * g_bo * keep[i]
        for b in samples:
            out[b, :] *= scale


@njit(parallel=True, fastmath=REASSOCIATE, cache=True, nogil=True)
def masked_weight_grad(grad, x, seed, planes, threshold, scale, out):
    """out[o, i] = scale * sum_b keep(b, o, i) grad[b, o] x[b, i]; the rows of out split across threads."""
    batch, n_out = grad.shape
    n_in = x.shape[1]
    for o in prange(n_out):
        words = np.empty((n_in + 63) // 64, dtype=np.uint64)
        keep = np.empty(words.shape[0] * 64, dtype=np.float32)
        out[o, :] = 0.0
        for b in range(batch):
            _keep_floats(seed, b, o, n_out, planes, threshold, words, keep)
            g_bo = grad[b, o]
            for i in range(n_in):
                out[o, i] += g_bo * x[b, i] * keep[i]
        out[o, :] *= scale


@njit(parallel=True, cache=True, nogil=True)
def mask_bits(seed, planes, threshold, out):
    """The masks themselves, out[b, o, i] = keep(b, o, i): for tests and small references only."""
    batch, n_out, n_in = out.shape
    for b in prange(batch):
        words = np.empty((n_in + 63) // 64, dtype=np.uint64)
        for o in range(n_out):
            _keep_words(seed, b, o, n_out, planes, threshold, words)
            for i in range(n_in):
                out[b, o, i] = (words[i // 64] >> np.uint64(i % 64)) & np.uint64(1) == np.uint64(1)
