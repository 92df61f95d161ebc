"""One numba call for a whole binary MLP at small batches, where the op-by-op path spends its
time in per-op dispatch rather than in arithmetic (``qnnlab.runtime.fused``). The binary layers'
tables travel as flat buffers with offsets (a typed list of arrays costs more to pass than the
kernel takes to run)."""

from __future__ import annotations

import numpy as np
from numba import njit

from qnnlab.kernels._numba import popcount


@njit(cache=True, nogil=True, fastmath=True)
def _dot(a, b):
    """sum a * b in float32, reassociated so it vectorises: exact here, because every term and
    partial sum is an integer below 2^24 (|c - 128| <= 128 times +-1, at most 2^17 terms)."""
    total = np.float32(0.0)
    for i in range(a.shape[0]):
        total += a[i] * np.float32(b[i])
    return total


@njit(cache=True, nogil=True)
def dense_chain(x, w0, offset0, bias0, sign0, bound0, shapes, words, biases, signs, bounds, scale, shift, out):
    """x (B, K0) float32 on the 8-bit pixel grid; layer 0: +-1 weights w0 (N1, K0) as float32,
    y = (c - 128) . w / 127.5 + offset (float64, then float32) + bias. Binary layer i has
    shapes[i] = (N, K, offset of its packed words, offset of its N values): weights words[...]
    (N rows of ceil(K / 64) words) against the packed bits of the previous layer's thresholded
    outputs, y = K - 2 popcount(a XOR w) + bias; every layer but the last thresholded as
    bit = (sign y >= bound), the last scaled and shifted into the logits out (B, C). The
    arithmetic is the op-by-op path's, step for step."""
    batch, k0 = x.shape
    n1 = w0.shape[0]
    layers = shapes.shape[0]
    widest = max(n1, shapes[:, 0].max())
    centred = np.empty(k0, dtype=np.float32)
    bits = np.zeros((widest + 63) // 64, dtype=np.uint64)
    following = np.zeros((widest + 63) // 64, dtype=np.uint64)
    for b in range(batch):  # serial: it serves batches too small to split across threads
        for k in range(k0):
            centred[k] = np.round(x[b, k] * np.float32(127.5) + np.float32(127.5)) - np.float32(128)
        bits[:] = 0
        for n in range(n1):
            acc = np.int64(_dot(centred, w0[n]))
            y = np.float32(acc / 127.5 + offset0[n]) + bias0[n]
            if np.float64(y) * sign0[n] >= bound0[n]:
                bits[n // 64] |= np.uint64(1) << np.uint64(n % 64)
        for i in range(layers):
            n_out, k, word_at, value_at = shapes[i, 0], shapes[i, 1], shapes[i, 2], shapes[i, 3]
            wk = (k + 63) // 64
            following[:] = 0
            for n in range(n_out):
                row = word_at + n * wk
                pop = 0
                for t in range(wk):
                    pop += popcount(bits[t] ^ words[row + t])
                y = np.float32(k - 2 * pop) + biases[value_at + n]
                if i == layers - 1:
                    out[b, n] = y * scale[n] + shift[n]
                elif np.float64(y) * signs[value_at + n] >= bounds[value_at + n]:
                    following[n // 64] |= np.uint64(1) << np.uint64(n % 64)
            bits, following = following, bits
