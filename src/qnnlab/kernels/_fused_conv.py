"""Convolutions fused with what follows them, in one numba call each (``qnnlab.runtime.fused``):
the first convolution on 8-bit pixels with its threshold, and each binary convolution with its
max pooling and threshold, written straight into the next layer's packed bits. Both run on
register tiles of pixels whose taps are read at offsets in the image (``_float_tiles``,
``_panels``), so nothing is copied into patches."""

from __future__ import annotations

import numpy as np
from numba import config, njit, prange

from qnnlab.kernels._float_tiles import COLUMNS as FLOAT_COLUMNS
from qnnlab.kernels._float_tiles import ROWS as FLOAT_ROWS
from qnnlab.kernels._float_tiles import WORD, float_inside_words, float_tile, inside_words, sign_words
from qnnlab.kernels._fused import binary_tail_serial
from qnnlab.kernels._numba import parallel_and_serial
from qnnlab.kernels._panels import COLUMNS
from qnnlab.kernels._panels import ROWS as TILE_ROWS
from qnnlab.kernels._pooled_tiles import pooled_conv_tile

# Row loops run as at most this many chunks of rows, each making its scratch arrays once: four per
# possible pool thread, so that fewer running threads (torch's count, or the free cores) still get
# even shares under numba's static schedule. A compile-time constant: asking numba for the running
# count inside a kernel keeps it out of numba's cache.
CHUNKS = 4 * max(1, config.NUMBA_NUM_THREADS)


@njit(inline="always")
def _pixel_row_sums(x, panels, offsets, stride, padding, b, oy, codes, sums):
    """sums[ox, o] (float32, exact) = the sum of pixel codes c = 127.5 (x + 1) times weights over
    output pixel (oy, ox)'s window taps inside the image, for every panel column o: the codes of
    its kh input rows written into ``codes`` (kh, W + 2 padding, C), zero on the padding (where
    they add nothing), through register tiles of pixels (``_float_tiles.float_tile``) reading
    each tap at ``offsets``."""
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    kh = codes.shape[0]
    top = oy * stride - padding
    codes[:] = 0
    for c in range(channels):
        for dy in range(max(0, -top), min(kh, height - top)):
            for ix in range(width):
                codes[dy, ix + padding, c] = np.round(x[b, c, top + dy, ix] * np.float32(127.5) + np.float32(127.5))
    out_w = sums.shape[0]
    for p in range(panels.shape[0]):
        for ox in range(0, out_w, FLOAT_ROWS):
            float_tile(
                min(FLOAT_ROWS, out_w - ox),
                codes.ctypes.data + ox * stride * channels * 4,
                stride * channels,
                offsets.ctypes.data,
                panels[p].ctypes.data,
                offsets.shape[0],
                sums[ox, p * FLOAT_COLUMNS :].ctypes.data,
                sums.shape[1],
            )


def _pixel_conv_threshold(x, panels, kernel, stride, padding, row_class, col_class, low, high, out):
    """The first convolution, on pixels x = c / 127.5 - 1 (B, C, H, W) float32 against +-1 filters
    as float32 panels (P, kh kw C, 64) (``_float_tiles.COLUMNS`` output channels each, taps in
    (dy, dx, c) order) with zero padding, then batch norm + sign as a threshold per channel,
    written as channel-packed bits out (B, H', W', ceil(O / 64)). Per output row the codes of its
    input rows, zero on the padding (where they add nothing), go through register tiles of
    pixels (``_float_tiles``), which hold the integer sums of codes times weights exactly. Each
    output pixel's window covers a class of taps (all of them inside the image; fewer along the
    border), row_class[oy] and col_class[ox] name it, and low / high (row classes, column classes,
    P 64) float32 the sums in which each channel fires for that class
    (``runtime.fused.PixelConvThreshold``): every pixel compares its sums, none converts them."""
    batch, channels, height, width = x.shape
    kh, kw = kernel
    out_h, out_w = out.shape[1], out.shape[2]
    n_out = out.shape[3] * 64
    padded_w = width + 2 * padding
    offsets = _tap_offsets(kh, kw, padded_w, channels)  # tap (dy, dx, c) in the codes (kh, W + 2 p, C)
    rows = batch * out_h
    chunks = min(rows, CHUNKS)
    for chunk in prange(chunks):
        codes = np.empty((kh, padded_w, channels), dtype=np.float32)
        sums = np.empty((out_w, n_out), dtype=np.float32)
        for row in range(rows * chunk // chunks, rows * (chunk + 1) // chunks):
            b, oy = row // out_h, row % out_h
            _pixel_row_sums(x, panels, offsets, stride, padding, b, oy, codes, sums)
            rows_low, rows_high = low[row_class[oy]], high[row_class[oy]]
            for ox in range(out_w):
                cls = col_class[ox]
                float_inside_words(sums.ctypes.data + ox * n_out * 4, rows_low[cls], rows_high[cls], out[b, oy, ox])


def _pixel_conv_values(x, panels, kernel, stride, padding, row_class, col_class, inside, bias, scale, shift, out):
    """``pixel_conv_threshold`` where the output stays real (BNN+'s stream begins there): each
    channel's value float32(s / 127.5 - inside[row class, column class]) + bias for the integer sum
    s of codes times weights, then its batch norm y * scale + shift (two float32 roundings); out
    (B, H', W', O) float32. ``inside``: the filters' sum over the taps inside the image, per class."""
    batch, channels, height, width = x.shape
    kh, kw = kernel
    out_h, out_w, n_out = out.shape[1], out.shape[2], out.shape[3]
    padded_w = width + 2 * padding
    offsets = _tap_offsets(kh, kw, padded_w, channels)
    rows = batch * out_h
    chunks = min(rows, CHUNKS)
    for chunk in prange(chunks):
        codes = np.empty((kh, padded_w, channels), dtype=np.float32)
        sums = np.empty((out_w, panels.shape[0] * FLOAT_COLUMNS), dtype=np.float32)
        for row in range(rows * chunk // chunks, rows * (chunk + 1) // chunks):
            b, oy = row // out_h, row % out_h
            _pixel_row_sums(x, panels, offsets, stride, padding, b, oy, codes, sums)
            rows_inside = inside[row_class[oy]]
            for ox in range(out_w):
                taps = rows_inside[col_class[ox]]
                for o in range(n_out):
                    value = np.float32(np.float64(sums[ox, o]) * (1 / 127.5) - taps[o]) + bias[o]
                    out[b, oy, ox, o] = value * scale[o] + shift[o]


@njit(inline="always")
def _pooled_row(padded, panels, offsets, corrections, inner, scratch, k, stride, padding, pool, b, py, best):
    """best[px, o] (int32, at least P 32 columns) = the largest convolution sum over the pool x
    pool window of pooled position (py, px), for every output channel o. A binary convolution of
    channel-packed bits given with ``padding`` zero pixels around each image (``_zero_padded``,
    (B, H + 2 p, W + 2 p, Wc)) with filters as panels (``_panels.panels`` of the packed (O, kh kw
    Wc) filters), on tiles of up to six pixels that pool as they finish
    (``_pooled_tiles.pooled_conv_tile``). A zero word counts as a -1 tap, so each pixel takes off
    corrections[dy, dx, o] = C - 2 popcount(filter o at that tap) for each of its taps outside
    the image (``_row_corrections``; ``inner`` those of a row whose window rows all lie inside,
    ``scratch`` room for another row's): the sums equal those over the taps inside, as zero
    padding of +-1 values gives."""
    height, width, wc = padded.shape[1] - 2 * padding, padded.shape[2] - 2 * padding, padded.shape[3]
    kh = corrections.shape[0]
    used_w = best.shape[0] * pool
    best[:] = np.iinfo(np.int32).min
    for qy in range(pool):
        top = (py * pool + qy) * stride - padding
        row_corrections = inner
        if top < 0 or top + kh > height:
            _row_corrections(corrections, top, height, width, stride, padding, scratch)
            row_corrections = scratch
        rows = padded[b, top + padding :].ctypes.data
        for p in range(panels.shape[0]):
            for ox in range(0, used_w, TILE_ROWS):
                pooled_conv_tile(
                    min(TILE_ROWS, used_w - ox),
                    rows + ox * stride * wc * 8,
                    stride * wc,
                    offsets.ctypes.data,
                    panels[p].ctypes.data,
                    offsets.shape[0],
                    k,
                    row_corrections[ox, p * COLUMNS :].ctypes.data,
                    row_corrections.shape[1],
                    best[0, p * COLUMNS :].ctypes.data,
                    best.shape[1],
                    ox,
                    pool,
                )


@njit(inline="always")
def _row_corrections(corrections, top, height, width, stride, padding, out):
    """out[ox, o] (int32, (pixels, P 32)) = minus the sum of corrections[dy, dx, o] over the taps of
    pixel ox's window that lie outside the image, for a convolution row whose window starts at
    input row ``top``; 0 for channels past the filters."""
    kh, kw, n_out = corrections.shape
    out[:] = 0
    for ox in range(out.shape[0]):
        left = ox * stride - padding
        for dy in range(kh):
            for dx in range(kw):
                if not (0 <= top + dy < height and 0 <= left + dx < width):
                    for o in range(n_out):
                        out[ox, o] -= corrections[dy, dx, o]


@njit(inline="always")
def _inner_corrections(x, corrections, stride, padding, pixels, columns):
    """``_pooled_row``'s ``inner``: the corrections (``pixels``, ``columns``) of a convolution row of
    input x whose window rows all lie inside the image (only its border pixels have any)."""
    inner = np.empty((pixels, columns), dtype=np.int32)
    _row_corrections(corrections, 0, x.shape[1], x.shape[2], stride, padding, inner)
    return inner


@njit(inline="always")
def _zero_padded(x, padding):
    """A zeroed (B, H + 2 padding, W + 2 padding, Wc) copy of x's shape to ``_pad_row`` into (x
    itself when padding is 0): each image with ``padding`` zero pixels around it, made once per
    call rather than copying each output row's kh input rows."""
    if padding == 0:
        return x
    batch, height, width, wc = x.shape
    return np.zeros((batch, height + 2 * padding, width + 2 * padding, wc), dtype=np.uint64)


@njit(inline="always")
def _pad_row(x, padding, row, padded):
    """Copy row ``row`` (over B H) of x into its place in ``padded`` (``_zero_padded``): flat
    loops, which compile to a plain copy where slice assignment took its general path."""
    if padding == 0:
        return
    height, width, wc = x.shape[1], x.shape[2], x.shape[3]
    b, iy = row // height, row % height
    source, target = x.reshape(-1), padded.reshape(-1)
    start = ((b * (height + 2 * padding) + iy + padding) * (width + 2 * padding) + padding) * wc
    for i in range(width * wc):
        target[start + i] = source[row * width * wc + i]


@njit(inline="always")
def _tap_offsets(kh, kw, padded_w, wc):
    """The word offset of each (dy, dx, word) of a tap in an image of kh rows of padded_w pixels."""
    offsets = np.empty(kh * kw * wc, dtype=np.int64)
    for dy in range(kh):
        for dx in range(kw):
            for t in range(wc):
                offsets[(dy * kw + dx) * wc + t] = (dy * padded_w + dx) * wc + t
    return offsets


def _conv_values(conv, out):
    """A binary convolution plus bias, unpooled: out (B, H', W', O) float32, the op-by-op path's
    values (integer sums, then float32 with the bias): ``_branch_values`` of conv = (bits, panels,
    corrections, channels, stride, padding, 1, bias, ones, zeros), whose batch norm is then exact.
    For convolutions whose output stays real (a BNN+ block's branch, op by op)."""
    offsets, padded, inner = _branch_tables(conv, out.shape[2])
    for row in prange(conv[0].shape[0] * conv[0].shape[1]):
        _pad_row(conv[0], conv[5], row, padded)
    out_h = out.shape[1]
    rows = out.shape[0] * out_h
    chunks = min(rows, CHUNKS)
    for chunk in prange(chunks):
        best, scratch = _branch_scratch(conv, inner)
        for row in range(rows * chunk // chunks, rows * (chunk + 1) // chunks):
            b, oy = row // out_h, row % out_h
            _branch_values(conv, padded, inner, offsets, b, oy, out[b, oy], best, scratch)


def _conv_pool_threshold(x, panels, corrections, channels, stride, padding, pool, low, high, out):
    """A binary convolution (``_pooled_row``) max-pooled over pool x pool windows (stride pool;
    pool 1: none), then batch norm + sign as a threshold per channel, written as channel-packed
    bits out (B, H'', W'', ceil(O / 64)): three ops of the packed path without their int32 and
    float feature maps in between. The ops' threshold of float32(sum) + bias is monotone in the
    integer sum, so max pooling the sums and testing them against the range [low, high] in which
    it fires (``runtime.fused.threshold_ranges``) gives the ops' bits; low and high padded to
    whole words of 64 channels with empty ranges."""
    kh, kw, _ = corrections.shape
    wc = x.shape[3]
    padded_w = x.shape[2] + 2 * padding
    offsets = _tap_offsets(kh, kw, padded_w, wc)
    k = kh * kw * channels
    padded = _zero_padded(x, padding)
    for row in prange(x.shape[0] * x.shape[1]):
        _pad_row(x, padding, row, padded)
    out_h, out_w, words = out.shape[1], out.shape[2], out.shape[3]
    inner = _inner_corrections(x, corrections, stride, padding, out_w * pool, panels.shape[0] * COLUMNS)
    rows = x.shape[0] * out_h
    chunks = min(rows, CHUNKS)
    for chunk in prange(chunks):
        best = np.empty((out_w, words * 64), dtype=np.int32)  # 64 columns a word: at least P 32
        scratch = np.empty_like(inner)
        for row in range(rows * chunk // chunks, rows * (chunk + 1) // chunks):
            b, py = row // out_h, row % out_h
            _pooled_row(padded, panels, offsets, corrections, inner, scratch, k, stride, padding, pool, b, py, best)
            for px in range(out_w):
                inside_words(best.ctypes.data + px * words * 64 * 4, low, high, out[b, py, px])


def _conv_pool_threshold_flat(x, panels, corrections, channels, stride, padding, pool, low, high, out):
    """``conv_pool_threshold`` for the last convolution before the classifier: the thresholded
    bits packed in the classifier's (C, H'', W'') order, out (B, ceil(C H'' W'' / 64)), with one
    range per feature (padded to whole words); the samples split across threads."""
    kh, kw, n_out = corrections.shape
    wc = x.shape[3]
    padded_w = x.shape[2] + 2 * padding
    offsets = _tap_offsets(kh, kw, padded_w, wc)
    k = kh * kw * channels
    out_h = (x.shape[1] + 2 * padding - kh) // stride + 1
    out_w = (x.shape[2] + 2 * padding - kw) // stride + 1
    pooled_h, pooled_w = out_h // pool, out_w // pool
    padded = _zero_padded(x, padding)
    for row in prange(x.shape[0] * x.shape[1]):
        _pad_row(x, padding, row, padded)
    inner = _inner_corrections(x, corrections, stride, padding, pooled_w * pool, panels.shape[0] * COLUMNS)
    for b in prange(x.shape[0]):
        scratch = np.empty_like(inner)
        best = np.empty((pooled_w, panels.shape[0] * COLUMNS), dtype=np.int32)
        values = np.zeros(out.shape[1] * 64, dtype=np.int32)
        for py in range(pooled_h):
            _pooled_row(padded, panels, offsets, corrections, inner, scratch, k, stride, padding, pool, b, py, best)
            for px in range(pooled_w):
                for o in range(n_out):  # into the classifier's (C, H, W) order
                    values[(o * pooled_h + py) * pooled_w + px] = best[px, o]
        inside_words(values.ctypes.data, low, high, out[b])


@njit(inline="always")
def _branch_values(conv, padded, inner, offsets, b, py, values, best, scratch):
    """values[px, o] (float32) of a Bi-Real block's convolution on pooled row py, conv = (bits,
    panels, corrections, channels, stride, padding, pool, bias, scale, shift): the binary
    convolution of the signs ``bits`` (read from ``padded``, their ``_zero_padded`` copy; ``inner``
    its ``_inner_corrections``; ``best`` and ``scratch`` from ``_branch_scratch``) max-pooled
    (``_pooled_row``), plus bias, then its batch
    norm y * scale + shift, each step rounded to float32 as the op-by-op path rounds it (max
    pooling the integer sums gives the max of their float values: the bias is added to all)."""
    bits, panels, corrections, channels, stride, padding, pool, bias, scale, shift = conv
    kh, kw, _ = corrections.shape
    k = kh * kw * channels
    _pooled_row(padded, panels, offsets, corrections, inner, scratch, k, stride, padding, pool, b, py, best)
    for px in range(values.shape[0]):
        for o in range(values.shape[1]):
            values[px, o] = (np.float32(best[px, o]) + bias[o]) * scale[o] + shift[o]


@njit(inline="always")
def _branch_tables(conv, out_w):
    """(tap offsets, the zeroed padded copy that ``_pad_row`` fills, inner corrections) of a
    ``_branch_values`` convolution whose pooled rows are ``out_w`` pixels wide."""
    bits, panels, corrections, stride, padding, pool = conv[0], conv[1], conv[2], conv[4], conv[5], conv[6]
    offsets = _tap_offsets(corrections.shape[0], corrections.shape[1], bits.shape[2] + 2 * padding, bits.shape[3])
    inner = _inner_corrections(bits, corrections, stride, padding, out_w * pool, panels.shape[0] * COLUMNS)
    return offsets, _zero_padded(bits, padding), inner


@njit(inline="always")
def _branch_scratch(conv, inner):
    """(best, scratch) for ``_branch_values``: a pooled row's sums and room for a border row's
    corrections, made once per chunk of rows rather than once per row."""
    best = np.empty((inner.shape[0] // conv[6], conv[1].shape[0] * COLUMNS), dtype=np.int32)
    return best, np.empty_like(inner)


def _residual_conv(conv, stream, reach, out):
    """A Bi-Real block whose shortcut is the real stream itself (reach 1) or its average over reach x
    reach windows, one output row at a time: the branch's values (``_branch_values`` of ``conv``)
    plus the stream (B, H, W, O) float32 summed over each window in row-major order and divided by
    reach^2, as avg_pool2d does; out (B, H'', W'', O) float32. Where the ops make five passes over
    float maps (the product, pooling, batch norm, the shortcut's pooling, the sum), this writes
    the block's output once."""
    out_h, out_w, n_out = out.shape[1], out.shape[2], out.shape[3]
    offsets, padded, inner = _branch_tables(conv, out_w)
    for row in prange(conv[0].shape[0] * conv[0].shape[1]):
        _pad_row(conv[0], conv[5], row, padded)
    area = np.float32(reach * reach)
    rows = out.shape[0] * out_h
    chunks = min(rows, CHUNKS)
    for chunk in prange(chunks):
        values = np.empty((out_w, n_out), dtype=np.float32)
        window = np.empty(n_out, dtype=np.float32)
        best, scratch = _branch_scratch(conv, inner)
        for row in range(rows * chunk // chunks, rows * (chunk + 1) // chunks):
            b, py = row // out_h, row % out_h
            _branch_values(conv, padded, inner, offsets, b, py, values, best, scratch)
            for px in range(out_w):
                window[:] = 0
                for qy in range(reach):
                    for qx in range(reach):
                        pixel = stream[b, py * reach + qy, px * reach + qx]
                        for o in range(n_out):
                            window[o] += pixel[o]
                for o in range(n_out):
                    out[b, py, px, o] = values[px, o] + window[o] / area


def _residual_conv_shortcut(conv, short, out):
    """A Bi-Real block whose shortcut is a binary convolution of its own signs with batch norm (where
    the width changes): both convolutions' values (``_branch_values`` of ``conv`` and ``short``)
    summed, one output row at a time; out (B, H'', W'', O) float32."""
    out_h, out_w, n_out = out.shape[1], out.shape[2], out.shape[3]
    offsets, padded, inner = _branch_tables(conv, out_w)
    short_offsets, short_padded, short_inner = _branch_tables(short, out_w)
    for row in prange(conv[0].shape[0] * conv[0].shape[1]):  # both read the block's signs (B, H, W)
        _pad_row(conv[0], conv[5], row, padded)
        _pad_row(short[0], short[5], row, short_padded)
    rows = out.shape[0] * out_h
    chunks = min(rows, CHUNKS)
    for chunk in prange(chunks):
        values = np.empty((out_w, n_out), dtype=np.float32)
        shortcut = np.empty((out_w, n_out), dtype=np.float32)
        best, scratch = _branch_scratch(conv, inner)
        short_best, short_scratch = _branch_scratch(short, short_inner)
        for row in range(rows * chunk // chunks, rows * (chunk + 1) // chunks):
            b, py = row // out_h, row % out_h
            _branch_values(conv, padded, inner, offsets, b, py, values, best, scratch)
            _branch_values(short, short_padded, short_inner, short_offsets, b, py, shortcut, short_best, short_scratch)
            for px in range(out_w):
                for o in range(n_out):
                    out[b, py, px, o] = values[px, o] + shortcut[px, o]


def _stream_signs(stream, signs, bits):
    """bits (B, H, W, words) = the packed signs of a Bi-Real block's real stream (B, H, W, C)
    float32 by its threshold signs = (sign, bound) (``_float_tiles.sign_words``)."""
    pixels, words = stream.reshape((-1, stream.shape[3])), bits.reshape((-1, bits.shape[3]))
    for i in prange(pixels.shape[0]):
        sign_words(pixels[i], signs[0], signs[1], words[i])


@njit(inline="always")
def _stream_bits(stream):
    """An empty (B, H, W, words) array for the packed signs of a stream (B, H, W, C)."""
    batch, height, width, channels = stream.shape
    return np.empty((batch, height, width, (channels + WORD - 1) // WORD), dtype=np.uint64)


pixel_conv_threshold, pixel_conv_threshold_serial = parallel_and_serial(_pixel_conv_threshold)
pixel_conv_values, pixel_conv_values_serial = parallel_and_serial(_pixel_conv_values)
conv_pool_threshold, conv_pool_threshold_serial = parallel_and_serial(_conv_pool_threshold)
conv_pool_threshold_flat, conv_pool_threshold_flat_serial = parallel_and_serial(_conv_pool_threshold_flat)
conv_values, conv_values_serial = parallel_and_serial(_conv_values)
residual_conv, residual_conv_serial = parallel_and_serial(_residual_conv)
residual_conv_shortcut, residual_conv_shortcut_serial = parallel_and_serial(_residual_conv_shortcut)
stream_signs, stream_signs_serial = parallel_and_serial(_stream_signs)


# A Bi-Real block in one call: its stream's signs, then its convolutions and sum, on the pool or
# (serial) on the calling thread. The signs are a kernel of their own: packed in the convolution's
# own loop nest, the block ran 1.5x slower.
@njit(cache=True, nogil=True)
def residual_block(tables, signs, stream, reach, out, serial):
    """``residual_conv`` of conv = (the signs of stream by ``signs``, *tables)."""
    bits = _stream_bits(stream)
    if serial:
        stream_signs_serial(stream, signs, bits)
        residual_conv_serial((bits,) + tables, stream, reach, out)
    else:
        stream_signs(stream, signs, bits)
        residual_conv((bits,) + tables, stream, reach, out)


@njit(cache=True, nogil=True)
def residual_block_shortcut(tables, signs, short_tables, short_signs, stream, out, serial):
    """``residual_conv_shortcut`` of the stream's signs by ``signs`` and by ``short_signs``."""
    bits, short_bits = _stream_bits(stream), _stream_bits(stream)
    if serial:
        stream_signs_serial(stream, signs, bits)
        stream_signs_serial(stream, short_signs, short_bits)
        residual_conv_shortcut_serial((bits,) + tables, (short_bits,) + short_tables, out)
    else:
        stream_signs(stream, signs, bits)
        stream_signs(stream, short_signs, short_bits)
        residual_conv_shortcut((bits,) + tables, (short_bits,) + short_tables, out)


# the columns of conv_chain's geometry table, one row per binary convolution
CHANNELS, KH, KW, STRIDE, PADDING, POOL, OUT_H, OUT_W, OUT_WORDS, FLAT = range(10)
PANELS_AT, PANEL_COUNT, PANEL_WORDS, CORRECTIONS_AT, UNITS, THRESHOLDS_AT, THRESHOLDS = range(10, 17)
GEOMETRY_COLUMNS = 17


@njit(cache=True, nogil=True)
def conv_chain(
    x,
    first_panels,
    first_shape,
    row_class,
    col_class,
    first_low,
    first_high,
    geometry,
    panels,
    corrections,
    lows,
    highs,
    shapes,
    words,
    tail_panels,
    tail_biases,
    tail_lows,
    tail_highs,
    scale,
    shift,
    out,
):
    """A whole binary CNN on one sample in one call on the calling thread: the first convolution
    on pixels (``pixel_conv_threshold``; first_shape = kh, kw, stride, padding and its output's
    H, W and words), each binary convolution with its pooling and threshold (one row of
    ``geometry`` each, its tables slices of the flat buffers; the last writes the classifier's
    flat bits) and the classifier's binary layers (``_fused.binary_tail_serial``, from shapes on). Each
    step is the kernel the plan calls op by op."""
    kernel = (first_shape[0], first_shape[1])
    maps = np.empty((1, first_shape[4], first_shape[5], first_shape[6]), dtype=np.uint64)
    pixel_conv_threshold_serial(
        x,
        first_panels,
        kernel,
        first_shape[2],
        first_shape[3],
        row_class,
        col_class,
        first_low,
        first_high,
        maps,
    )
    flat = np.empty((1, 0), dtype=np.uint64)
    for layer in range(geometry.shape[0]):
        g = geometry[layer]
        size = g[PANEL_COUNT] * g[PANEL_WORDS] * COLUMNS
        panel = panels[g[PANELS_AT] : g[PANELS_AT] + size].reshape((g[PANEL_COUNT], g[PANEL_WORDS], COLUMNS))
        size = g[KH] * g[KW] * g[UNITS]
        correction = corrections[g[CORRECTIONS_AT] : g[CORRECTIONS_AT] + size].reshape((g[KH], g[KW], g[UNITS]))
        low = lows[g[THRESHOLDS_AT] : g[THRESHOLDS_AT] + g[THRESHOLDS]]
        high = highs[g[THRESHOLDS_AT] : g[THRESHOLDS_AT] + g[THRESHOLDS]]
        if g[FLAT]:
            flat = np.empty((1, g[OUT_WORDS]), dtype=np.uint64)
            conv_pool_threshold_flat_serial(
                maps, panel, correction, g[CHANNELS], g[STRIDE], g[PADDING], g[POOL], low, high, flat
            )
        else:
            following = np.empty((1, g[OUT_H], g[OUT_W], g[OUT_WORDS]), dtype=np.uint64)
            conv_pool_threshold_serial(
                maps, panel, correction, g[CHANNELS], g[STRIDE], g[PADDING], g[POOL], low, high, following
            )
            maps = following
    binary_tail_serial(flat, shapes, words, tail_panels, tail_biases, tail_lows, tail_highs, scale, shift, out)
