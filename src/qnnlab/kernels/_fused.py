"""One numba call for a whole binary MLP at small batches, where the op-by-op path spends its
time in per-op dispatch rather than in arithmetic (``qnnlab.runtime.fused``). The binary layers'
tables travel as flat buffers with offsets (a typed list of arrays costs more to pass than the
kernel takes to run)."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from qnnlab.kernels import _amx, _int8_tiles, _panels
from qnnlab.kernels._float_tiles import inside_bits, sign_words, threshold_words
from qnnlab.kernels._masked import ROWS, int_sum, int_sums
from qnnlab.kernels._numba import popcount
from qnnlab.kernels._panels import COLUMNS, gemm, signed_tile

_AMX_ROWS = _amx.ROW_TILES * _amx.TILE_ROWS  # samples per call of the AMX tiles


@njit(cache=True, nogil=True)
def _centred_sums(codes, w0, sums):
    """sums[n] = the exact product of the centred pixel codes (int8, zero-padded to whole words)
    with unit n's packed +-1 weights, by masked additions four units at a time
    (``kernels._masked``). One thread: split across threads it saved a few percent, but beside a
    busy core each call waited a time slice for the thread whose core was taken."""
    n1, words = w0.shape
    total = np.int64(0)
    for k in range(codes.shape[0]):
        total += codes[k]
    for n in range(0, n1, ROWS):
        if n + ROWS <= n1:
            block = int_sums(codes.ctypes.data, w0.ctypes.data + n * words * 8, words, words)
            for r in range(ROWS):
                sums[n + r] = 2 * block[r] - total
        else:
            for m in range(n, n1):
                sums[m] = 2 * int_sum(codes.ctypes.data, w0.ctypes.data + m * words * 8, words, words)[0] - total


@njit(cache=True, nogil=True)
def _first_layer(codes, w0, offset0, bias0, sign0, bound0, sums, keep):
    """keep[n]: the threshold of the 8-bit first layer's unit n, from its exact centred sum."""
    _centred_sums(codes, w0, sums)
    for n in range(w0.shape[0]):
        keep[n] = _unit_fires(sums[n], n, offset0, bias0, sign0, bound0)


@njit(inline="always")
def _pixel_codes(x, b, codes):
    """codes[k] = the centred 8-bit code c - 128 of pixel x[b, k] = c / 127.5 - 1."""
    for k in range(x.shape[1]):
        codes[k] = np.int8(np.round(x[b, k] * np.float32(127.5) + np.float32(127.5)) - np.float32(128))


@njit(inline="always")
def _pixel_value(centred, n, offset, bias):
    """The first layer's value of unit n from its exact centred sum, as the ops compute it."""
    return np.float32(centred / 127.5 + offset[n]) + bias[n]


@njit(cache=True, nogil=True)
def pixel_dense_values_serial(x, w0, offset, bias, scale, shift, out):
    """out (B, N) float32: the 8-bit first layer's values (``_pixel_value``) from the exact centred
    sums by masked additions on its packed weights (``_centred_sums``), then its batch norm y *
    scale + shift, one sample at a time on the calling thread: at batch 1 it reads 1 bit per
    weight where an int8 GEMM reads 8."""
    codes = np.zeros(w0.shape[1] * 64, dtype=np.int8)
    sums = np.empty(w0.shape[0], dtype=np.int64)
    for b in range(x.shape[0]):
        _pixel_codes(x, b, codes)
        _centred_sums(codes, w0, sums)
        for n in range(w0.shape[0]):
            out[b, n] = _pixel_value(sums[n], n, offset, bias) * scale[n] + shift[n]


@njit(inline="always")
def _unit_fires(acc, n, offset0, bias0, sign0, bound0):
    return np.float64(_pixel_value(acc, n, offset0, bias0)) * sign0[n] >= bound0[n]


@njit(inline="always")
def _binary_layers(bits, following, b, shapes, words, panels, biases, lows, highs, scale, shift, out):
    """The binary layers of a chain for sample b, from the packed bits of its input: layer i has
    shapes[i] = (N, K, offset of its packed words, offset of its N values, offset of its panels),
    weights words[...] (N rows of ceil(K / 64) words) and the same in the register-tile layout
    (``_panels.panels``), products p = K - 2 popcount(a XOR w); every layer but the last
    thresholded as bit = (lows <= p <= highs), the ranges in which the ops' threshold of p + bias
    fires, the last's p + bias scaled and shifted into out[b]. Each full
    group of 32 units is one register tile (the input word broadcast against 32 units' words)."""
    layers = shapes.shape[0]
    products = np.empty(COLUMNS, dtype=np.int32)
    for i in range(layers):
        n_out, k, word_at, value_at, panel_at = shapes[i, 0], shapes[i, 1], shapes[i, 2], shapes[i, 3], shapes[i, 4]
        wk = (k + 63) // 64
        following[:] = 0
        full = n_out - n_out % COLUMNS
        for n in range(n_out):
            if n < full:
                if n % COLUMNS == 0:
                    panel = panels.ctypes.data + (panel_at + n * wk) * 8
                    signed_tile(1, bits.ctypes.data, wk, panel, wk, products.ctypes.data, COLUMNS, k)
                product = products[n % COLUMNS]
            else:
                row = word_at + n * wk
                pop = 0
                for t in range(wk):
                    pop += popcount(bits[t] ^ words[row + t])
                product = k - 2 * pop
            if i == layers - 1:
                out[b, n] = (np.float32(product) + biases[value_at + n]) * scale[n] + shift[n]
            elif lows[value_at + n] <= product <= highs[value_at + n]:
                following[n // 64] |= np.uint64(1) << np.uint64(n % 64)
        bits, following = following, bits


@njit(cache=True, nogil=True)
def dense_chain(x, w0, offset0, bias0, sign0, bound0, shapes, words, panels, biases, lows, highs, scale, shift, out):
    """x (B, K0) float32 on the 8-bit pixel grid; layer 0: +-1 weights w0 packed (N1, W0) uint64,
    y = (c - 128) . w / 127.5 + offset (float64, then float32) + bias, thresholded into packed
    bits; then the binary layers (``_binary_layers``) into the logits out (B, C). The arithmetic
    is the op-by-op path's, step for step."""
    batch = x.shape[0]
    n1 = w0.shape[0]
    widest = max(n1, shapes[:, 0].max())
    codes = np.zeros(w0.shape[1] * 64, dtype=np.int8)
    sums = np.empty(n1, dtype=np.int64)
    keep = np.empty(n1, dtype=np.bool_)
    bits = np.zeros((widest + 63) // 64, dtype=np.uint64)
    following = np.zeros((widest + 63) // 64, dtype=np.uint64)
    for b in range(batch):
        _pixel_codes(x, b, codes)
        bits[:] = 0
        _first_layer(codes, w0, offset0, bias0, sign0, bound0, sums, keep)
        for n in range(n1):
            if keep[n]:
                bits[n // 64] |= np.uint64(1) << np.uint64(n % 64)
        _binary_layers(bits, following, b, shapes, words, panels, biases, lows, highs, scale, shift, out)


@njit(cache=True, nogil=True)
def binary_tail_serial(packed, shapes, words, panels, biases, lows, highs, scale, shift, out):
    """The binary layers of a chain (``_binary_layers``) from packed input bits (B, W), one sample
    at a time on the calling thread (for one sample: a parallel call would only wait for the
    other threads; a batch takes ``binary_tail_batch``)."""
    widest = max(packed.shape[1] * 64, shapes[:, 0].max())
    for b in range(packed.shape[0]):
        bits = np.zeros((widest + 63) // 64, dtype=np.uint64)
        following = np.zeros((widest + 63) // 64, dtype=np.uint64)
        bits[: packed.shape[1]] = packed[b]
        _binary_layers(bits, following, b, shapes, words, panels, biases, lows, highs, scale, shift, out)


@njit(cache=True, nogil=True)
def binary_tail_batch(packed, shapes, words, panels, biases, lows, highs, scale, shift, out):
    """The binary layers of a chain (the tables of ``binary_tail_serial``) for a batch of packed inputs
    (B, W) in one call: each layer but the last as register tiles thresholded into the next
    layer's bits while in L1 (``_threshold_layer``), the last as the blocked product of all
    samples (``_panels.gemm``) scaled and shifted into out (B, C); the ops' arithmetic."""
    batch = packed.shape[0]
    bits = packed
    layers = shapes.shape[0]
    for i in range(layers):
        n, k, word_at, value_at, panel_at = shapes[i, 0], shapes[i, 1], shapes[i, 2], shapes[i, 3], shapes[i, 4]
        wk = (k + 63) // 64
        count = (n + COLUMNS - 1) // COLUMNS
        layer_panels = panels[panel_at : panel_at + count * wk * COLUMNS].reshape((count, wk, COLUMNS))
        if i == layers - 1:
            products = np.empty((batch, n), dtype=np.int32)
            gemm(bits, layer_panels, words[word_at : word_at + n * wk].reshape((n, wk)), k, products)
            for b in range(batch):
                for j in range(n):
                    out[b, j] = (np.float32(products[b, j]) + biases[value_at + j]) * scale[j] + shift[j]
        else:
            following = np.empty((batch, (n + 63) // 64), dtype=np.uint64)
            _threshold_layer(bits, layer_panels, k, n, lows[value_at:], highs[value_at:], following)
            bits = following


@njit(parallel=True, cache=True, nogil=True)
def _threshold_layer(bits, layer_panels, k, n, low, high, out):
    """out[b] = the packed bits (low <= k - 2 popcount(bits[b] XOR w) <= high) over the layer's n
    units: each word of 64 units from two register tiles, thresholded while their products are
    in L1 (no (B, N) products written and read back); the words split across threads, every
    sample streaming past their panels. low and high padded to whole words with empty ranges;
    the panels' missing rows zero."""
    batch, wk = bits.shape
    for q in prange(out.shape[1]):
        products = np.empty((_panels.ROWS, 2 * COLUMNS), dtype=np.int32)
        at = q * 2 * COLUMNS
        for first in range(0, batch, _panels.ROWS):
            rows = min(_panels.ROWS, batch - first)
            for half in range(2):
                if at + half * COLUMNS < n:
                    panel = layer_panels[2 * q + half].ctypes.data
                    target = products.ctypes.data + half * COLUMNS * 4
                    signed_tile(rows, bits[first].ctypes.data, wk, panel, wk, target, 2 * COLUMNS, k)
            for r in range(rows):
                out[first + r, q] = inside_bits(
                    products.ctypes.data + r * 2 * COLUMNS * 4, low[at:].ctypes.data, high[at:].ctypes.data
                )


@njit(parallel=True, cache=True, nogil=True)
def residual_dense(bits, layer_panels, k, x, bias, scale, shift, out):
    """out = x + ((K - 2 popcount(bits XOR w) + bias) * scale + shift): a Bi-Real block of a binary
    MLP (the binary layer on the packed signs of the real stream x (B, N), its batch norm, the sum
    with x) with the ops' float steps, each tile's products turned into the stream's next values
    while in L1; the panels (``_panels.panels``, missing rows zero) split across threads."""
    batch, wk = bits.shape
    n = out.shape[1]
    for p in prange(layer_panels.shape[0]):
        products = np.empty((_panels.ROWS, COLUMNS), dtype=np.int32)
        at = p * COLUMNS
        units = min(COLUMNS, n - at)
        unit_bias, unit_scale, unit_shift = bias[at : at + units], scale[at : at + units], shift[at : at + units]
        for first in range(0, batch, _panels.ROWS):
            rows = min(_panels.ROWS, batch - first)
            signed_tile(
                rows, bits[first].ctypes.data, wk, layer_panels[p].ctypes.data, wk, products.ctypes.data, COLUMNS, k
            )
            for r in range(rows):
                found, stream, target = products[r], x[first + r, at : at + units], out[first + r, at : at + units]
                for j in range(units):
                    target[j] = (np.float32(found[j]) + unit_bias[j]) * unit_scale[j] + unit_shift[j] + stream[j]


@njit(cache=True, nogil=True)
def residual_dense_block(stream, signs, layer_panels, k, bias, scale, shift, out):
    """``residual_dense`` of a Bi-Real block of a binary MLP in one call: the signs of its real
    stream (B, K) float32 by its threshold signs = (sign, bound) (``_float_tiles.sign_words``,
    one row at a time on the calling thread: B ceil(K / 64) words), then the block."""
    bits = np.empty((stream.shape[0], (stream.shape[1] + 63) // 64), dtype=np.uint64)
    for b in range(stream.shape[0]):
        sign_words(stream[b], signs[0], signs[1], bits[b])
    residual_dense(bits, layer_panels, k, stream, bias, scale, shift, out)


@njit(cache=True, nogil=True)
def centred_threshold(sums, offset, bias, sign, bound, out):
    """The packed bits of the 8-bit first layer at a batch, from its exact centred sums (B, N)
    int32 (an int8 GEMM's): y = sums / 127.5 + offset (float64, then float32) + bias, bit =
    (sign y >= bound), as the ops compute it; bias, sign and bound padded to whole words. One
    thread: light work right after torch's GEMM, whose OpenMP workers still hold the cores."""
    batch, n = sums.shape
    values = np.zeros(out.shape[1] * 64, dtype=np.float32)
    for b in range(batch):
        for j in range(n):
            values[j] = np.float32(sums[b, j] / 127.5 + offset[j]) + bias[j]
        threshold_words(values, sign, bound, n, out[b])


@njit(parallel=True, cache=True, nogil=True)
def pixel_dense_threshold(x, panels, low, high, out):
    """The packed bits of the 8-bit first layer at a batch with its product on VNNI tiles
    (``_pixel_tiles``): per unit the range [low, high] of the sums c . w of pixel codes c in which
    its threshold fires (``code_ranges``: the threshold is monotone in the sum, so an integer
    compare replaces the float arithmetic after the product); low and high are padded to P 64
    entries with empty ranges."""
    codes = _pixel_code_rows(x, panels.shape[1], x.shape[0])
    for p in prange(panels.shape[0]):
        sums = np.empty((_int8_tiles.ROWS, 64), dtype=np.int32)
        at = p * 64
        for first in range(0, x.shape[0], _int8_tiles.ROWS):
            rows = _pixel_tiles(codes, panels, p, first, sums)
            for r in range(rows):
                out[first + r, p] = inside_bits(
                    sums.ctypes.data + r * 64 * 4, low[at:].ctypes.data, high[at:].ctypes.data
                )


@njit(parallel=True, cache=True, nogil=True)
def pixel_dense_threshold_amx(x, panels, low, high, out):
    """``pixel_dense_threshold`` with the product on AMX tiles (``_pixel_amx_tiles``)."""
    codes = _pixel_amx_codes(x, panels)
    for p in prange(panels.shape[0]):
        sums = np.empty((_AMX_ROWS, 64), dtype=np.int32)
        at = p * 64
        for first in range(0, x.shape[0], _AMX_ROWS):
            rows = _pixel_amx_tiles(codes, panels, p, first, x.shape[0], sums)
            for r in range(rows):
                out[first + r, p] = inside_bits(
                    sums.ctypes.data + r * 64 * 4, low[at:].ctypes.data, high[at:].ctypes.data
                )


@njit(parallel=True, cache=True, nogil=True)
def pixel_dense_values(x, panels, shifts, offset, bias, scale, shift, out):
    """out (B, N) float32: the 8-bit first layer's values at a batch, float32(s / 127.5 + offset) +
    bias as ``_pixel_value`` (on row slices, which the compiler vectorises), then its batch norm y *
    scale + shift, from its exact sums on VNNI tiles (``_pixel_tiles``) centred by ``shifts`` = 128
    sum(w) per unit: for a first layer whose output stays real (a Bi-Real stream)."""
    codes = _pixel_code_rows(x, panels.shape[1], x.shape[0])
    for p in prange(panels.shape[0]):
        sums = np.empty((_int8_tiles.ROWS, 64), dtype=np.int32)
        for first in range(0, x.shape[0], _int8_tiles.ROWS):
            rows = _pixel_tiles(codes, panels, p, first, sums)
            _pixel_value_rows(sums, rows, first, p * 64, shifts, offset, bias, scale, shift, out)


@njit(parallel=True, cache=True, nogil=True)
def pixel_dense_values_amx(x, panels, shifts, offset, bias, scale, shift, out):
    """``pixel_dense_values`` with the product on AMX tiles (``_pixel_amx_tiles``)."""
    codes = _pixel_amx_codes(x, panels)
    for p in prange(panels.shape[0]):
        sums = np.empty((_AMX_ROWS, 64), dtype=np.int32)
        for first in range(0, x.shape[0], _AMX_ROWS):
            rows = _pixel_amx_tiles(codes, panels, p, first, x.shape[0], sums)
            _pixel_value_rows(sums, rows, first, p * 64, shifts, offset, bias, scale, shift, out)


@njit(inline="always")
def _pixel_value_rows(sums, rows, first, at, shifts, offset, bias, scale, shift, out):
    """out[first + r, at:] for r < rows from the uncentred sums of the units from ``at``."""
    units = min(64, out.shape[1] - at)
    unit_shifts, unit_offsets, unit_biases = shifts[at : at + units], offset[at : at + units], bias[at : at + units]
    unit_scale, unit_shift = scale[at : at + units], shift[at : at + units]
    for r in range(rows):
        found, target = sums[r], out[first + r, at : at + units]
        for j in range(units):
            value = np.float32((found[j] - unit_shifts[j]) / 127.5 + unit_offsets[j]) + unit_biases[j]
            target[j] = value * unit_scale[j] + unit_shift[j]


@njit(inline="always")
def _pixel_code_rows(x, groups, rows):
    """The unsigned pixel codes of x (B, K) float32 on the pixel grid, rows zero-padded to ``groups``
    groups of four, and zero rows after the B samples up to ``rows``."""
    batch, k = x.shape
    codes = np.zeros((rows, groups * _int8_tiles.GROUP), dtype=np.uint8)
    for b in prange(batch):
        for t in range(k):  # within 1e-3 of a code (the model checked): + 0.5 and truncation round
            codes[b, t] = np.uint8(np.int32(x[b, t] * np.float32(127.5) + np.float32(128.0)))
    return codes


@njit(inline="always")
def _pixel_tiles(codes, panels, p, first, sums):
    """sums[r, j] = c . w for up to ROWS samples from ``first`` and the 64 units of panel p of the
    +-1 weights laid out (P, ceil(K / 4), 64, 4) int8 (``_int8_tiles.dot4_tile``, only where
    available); returns how many samples."""
    rows = min(_int8_tiles.ROWS, codes.shape[0] - first)
    _int8_tiles.dot4_tile(
        rows, codes[first].ctypes.data, codes.shape[1], panels[p].ctypes.data, panels.shape[1], sums.ctypes.data, 64
    )
    return rows


@njit(inline="always")
def _pixel_amx_codes(x, panels):
    """``_pixel_code_rows`` for AMX tiles: zero rows up to whole pairs of 16-row tiles."""
    return _pixel_code_rows(x, panels.shape[1], (x.shape[0] + _AMX_ROWS - 1) // _AMX_ROWS * _AMX_ROWS)


@njit(inline="always")
def _pixel_amx_tiles(codes, panels, p, first, batch, sums):
    """sums[r, j] = c . w for up to two 16-row tiles of samples from ``first`` and the 64 units of
    panel p, whose groups are padded to whole 64-code chunks (``_amx.tile_products``, only where
    available); returns how many samples."""
    chunks = panels.shape[1] // (_amx.CHUNK // _int8_tiles.GROUP)
    tiles = min(_amx.ROW_TILES, (batch - first + _amx.TILE_ROWS - 1) // _amx.TILE_ROWS)
    row = codes[first].ctypes.data
    for half in range(2):  # the panel's 64 units as two calls of two 16-column blocks
        at = half * 2 * _amx.TILE_ROWS * 4  # 32 columns of int8 x 4 codes, or of int32 sums
        _amx.tile_products(
            tiles, row, codes.shape[1], panels[p].ctypes.data + at, chunks, sums.ctypes.data + at, 64 * 4
        )
    return min(_AMX_ROWS, batch - first)


@njit(cache=True, nogil=True)
def dense_batch(x, panels, low, high, shapes, words, tail_panels, biases, lows, highs, scale, shift, out):
    """A whole binary MLP on a batch in one call: the first layer on VNNI tiles with its threshold
    (``pixel_dense_threshold``), then the binary layers (``binary_tail_batch``)."""
    bits = np.empty((x.shape[0], panels.shape[0]), dtype=np.uint64)
    pixel_dense_threshold(x, panels, low, high, bits)
    binary_tail_batch(bits, shapes, words, tail_panels, biases, lows, highs, scale, shift, out)


@njit(cache=True, nogil=True)
def dense_batch_amx(x, panels, low, high, shapes, words, tail_panels, biases, lows, highs, scale, shift, out):
    """``dense_batch`` with the first layer on AMX tiles (``pixel_dense_threshold_amx``)."""
    bits = np.empty((x.shape[0], panels.shape[0]), dtype=np.uint64)
    pixel_dense_threshold_amx(x, panels, low, high, bits)
    binary_tail_batch(bits, shapes, words, tail_panels, biases, lows, highs, scale, shift, out)
