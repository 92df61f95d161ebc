"""Numba kernels of products under per-sample random weight masks (DropConnect) that never store
the masks: the keep bit of weight (o, i) for sample b is drawn from a counter-based hash of
(seed, b, o, i // 4), sixteen bits per weight, so the forward pass and both backward products
regenerate the same masks from the seed alone (memory O(1) instead of batch x weights)."""

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


@njit(inline="always")
def _word(seed, b, o, group, n_out, groups):
    counter = (np.uint64(b) * np.uint64(n_out) + np.uint64(o)) * np.uint64(groups) + np.uint64(group)
    return _mix(seed + GOLDEN * (counter + np.uint64(1)))


@njit(inline="always")
def _keep_row(seed, b, o, n_out, threshold, keep):
    """keep[i] = keep(b, o, i) for every input i: the weight is kept when its 16-bit draw < threshold."""
    n_in = keep.shape[0]
    groups = (n_in + 3) // 4
    for g in range(groups):
        bits = _word(seed, b, o, g, n_out, groups)
        for j in range(min(4, n_in - 4 * g)):
            keep[4 * g + j] = (bits >> np.uint64(16 * j)) & np.uint64(0xFFFF) < threshold


@njit(parallel=True, cache=True, nogil=True)
def masked_forward(x, w, seed, threshold, scale, out):
    """out[b, o] = scale * sum_i keep(b, o, i) w[o, i] x[b, i]."""
    batch, n_in = x.shape
    n_out = w.shape[0]
    for b in prange(batch):
        keep = np.empty(n_in, dtype=np.bool_)
        for o in range(n_out):
            _keep_row(seed, b, o, n_out, threshold, keep)
            acc = np.float32(0.0)
            for i in range(n_in):  # times 1 or 0: the kept terms' sum exactly, without a branch
                acc += w[o, i] * x[b, i] * np.float32(keep[i])
            out[b, o] = acc * scale


@njit(parallel=True, cache=True, nogil=True)
def masked_input_grad(grad, w, seed, threshold, scale, out):
    """out[b, i] = scale * sum_o keep(b, o, i) w[o, i] grad[b, o]."""
    batch, n_out = grad.shape
    n_in = w.shape[1]
    for b in prange(batch):
        keep = np.empty(n_in, dtype=np.bool_)
        out[b, :] = 0.0
        for o in range(n_out):
            _keep_row(seed, b, o, n_out, threshold, keep)
            g_bo = grad[b, o]
            for i in range(n_in):
                out[b, i] += w[o, i] * g_bo * np.float32(keep[i])
        out[b, :] *= scale


@njit(parallel=True, cache=True, nogil=True)
def masked_weight_grad(grad, x, seed, threshold, scale, out):
    """out[o, i] = scale * sum_b keep(b, o, i) grad[b, o] x[b, i]."""
    batch, n_out = grad.shape
    n_in = x.shape[1]
    for o in prange(n_out):
        keep = np.empty(n_in, dtype=np.bool_)
        out[o, :] = 0.0
        for b in range(batch):
            _keep_row(seed, b, o, n_out, threshold, keep)
            g_bo = grad[b, o]
            for i in range(n_in):
                out[o, i] += g_bo * x[b, i] * np.float32(keep[i])
        out[o, :] *= scale


@njit(parallel=True, cache=True, nogil=True)
def mask_bits(seed, threshold, out):
    """The masks themselves, out[b, o, i] = keep(b, o, i): for tests and small references only."""
    batch, n_out, _ = out.shape
    for b in prange(batch):
        for o in range(n_out):
            _keep_row(seed, b, o, n_out, threshold, out[b, o])
