"""Register tiles for the two float steps around binary convolutions: the first layer's product
of pixel codes with +-1 filters, and the threshold that turns a pixel's channel values into
packed bits. Both in LLVM IR (as ``kernels._panels``), so they run as whole-vector operations
however short the loops around them.

- ``float_tile``: out[r, j] = sum_t a[r step + offsets[t]] w[t, j] for ``rows`` pixels
  and the ``COLUMNS`` columns of a panel of w (K x COLUMNS float32): the offsets address each
  tap of a convolution in the image itself, so no patches are copied. Each accumulator row is
  four 16-lane vectors kept in registers, one broadcast and four multiply-adds per tap. With
  integer codes and +-1 weights every partial sum is an integer below 2^24: float32 is exact.
- ``threshold_bits``: the packed word of (sign[j] * float64(values[j]) >= bound[j]) over 64
  channels, one vector compare per eight channels instead of 64 scalar tests; lanes at or past
  ``count`` are cleared, so the caller pads its buffers to whole words.
- ``inside_bits`` / ``inside_words``: the same for integer sums against the range of sums in
  which each channel's threshold fires (``runtime.fused.threshold_ranges``), eight compares
  per 64 channels; padding channels carry empty ranges. ``float_inside_bits`` /
  ``float_inside_words`` compare integer sums that float tiles hold exactly, as floats.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from qnnlab.kernels._panels import by_rows, outer_products, panel_vectors, splat, store_rows

ROWS = 6  # pixels per tile: 6 x 4 accumulators, the panel row's four vectors and a broadcast
COLUMNS = 64  # float32 outputs per panel row: four 512-bit vectors
LANES = 16
WORD = 64


@intrinsic
def float_tile(typingctx, rows, a_address, a_step, offsets_address, panel_address, count, out_address, out_stride):
    """out[r, j] (float32, rows ``out_stride`` apart) = sum_t a[r a_step + offsets[t]] panel[t, j]
    for ``rows`` (1..ROWS) pixels over the ``count`` taps (int64 offsets) of one panel's
    ``COLUMNS`` columns."""
    sig = types.void(types.intp, types.uintp, types.intp, types.uintp, types.uintp, types.intp, types.uintp, types.intp)

    def codegen(context, builder, signature, args):
        height, a_addr, step, offsets_addr, panel_addr, taps, out_addr, out_step = args
        single = ir.FloatType()
        vector = ir.VectorType(single, LANES)
        parts = COLUMNS // LANES
        index = taps.type
        fma = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vector, [vector] * 3), f"llvm.fmuladd.v{LANES}f32"
        )
        zero = ir.Constant(vector, [0.0] * LANES)
        a_ptr = builder.inttoptr(a_addr, single.as_pointer())
        panel_ptr = builder.inttoptr(panel_addr, vector.as_pointer())
        offsets = builder.inttoptr(offsets_addr, ir.IntType(64).as_pointer())

        def spread_at(offset, r):
            at = builder.add(builder.mul(step, ir.Constant(index, r)), offset)
            return splat(builder, builder.load(builder.gep(a_ptr, [at]), align=4), vector)

        def multiply_add(total, spread, column):
            return builder.call(fma, [spread, column, total])

        def emit(rows):
            acc = [[cgutils.alloca_once_value(builder, zero) for _ in range(parts)] for _ in range(rows)]
            column_at = panel_vectors(builder, panel_ptr, parts, 4)
            outer_products(builder, taps, acc, column_at, spread_at, multiply_add, offsets)
            store_rows(builder, out_addr, out_step, [[builder.load(v) for v in row] for row in acc])

        by_rows(builder, height, ROWS, emit)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def threshold_bits(typingctx, values_address, sign_address, bound_address, count):
    """uint64 with bit j = (float64(values[j]) * sign[j] >= bound[j]) for j < count (<= 64), from
    float32 values and float64 signs and bounds; all three are read for 64 entries."""
    sig = types.uint64(types.uintp, types.uintp, types.uintp, types.intp)

    def codegen(context, builder, signature, args):
        values_addr, sign_addr, bound_addr, n = args
        double = ir.DoubleType()
        floats = ir.VectorType(ir.FloatType(), WORD)
        doubles = ir.VectorType(double, WORD)
        values = builder.load(builder.inttoptr(values_addr, floats.as_pointer()), align=4)
        sign = builder.load(builder.inttoptr(sign_addr, doubles.as_pointer()), align=8)
        bound = builder.load(builder.inttoptr(bound_addr, doubles.as_pointer()), align=8)
        passed = builder.fcmp_ordered(">=", builder.fmul(builder.fpext(values, doubles), sign), bound)
        word = builder.bitcast(passed, ir.IntType(WORD))
        wide = builder.zext(n, ir.IntType(128)) if n.type.width < 128 else n
        one = ir.Constant(ir.IntType(128), 1)
        keep = builder.trunc(builder.sub(builder.shl(one, wide), one), ir.IntType(WORD))
        return builder.and_(word, keep)

    return sig, codegen


@njit(inline="always")
def threshold_words(values, sign, bound, count, out):
    """out[w] = ``threshold_bits`` of entries 64 w .. 64 w + 63 for every word w of out, over the
    first ``count`` entries; values, sign and bound padded to whole words."""
    for word in range(out.shape[0]):
        at = word * WORD
        out[word] = threshold_bits(
            values[at:].ctypes.data, sign[at:].ctypes.data, bound[at:].ctypes.data, min(WORD, count - at)
        )


@njit(inline="always")
def sign_words(values, sign, bound, words):
    """Pack the thresholded signs of one row ``values`` float32 (a pixel's channels, a sample's
    units) into ``words``: bit c = (sign[c] values[c] >= bound[c]), the tables of
    ``kernels.threshold_tables`` (``kernels.threshold_pack``'s bits), 64 entries a word by vector
    compares (``threshold_words``) where the row is whole words."""
    count = values.shape[0]
    if count % WORD == 0:
        threshold_words(values, sign, bound, count, words)
        return
    for w in range(words.shape[0]):
        word = np.uint64(0)
        for c in range(w * WORD, min(count, (w + 1) * WORD)):
            fires = np.float64(values[c]) * sign[c] >= bound[c]
            word |= np.uint64(fires) << np.uint64(c - w * WORD)
        words[w] = word


@njit(parallel=True, cache=True, nogil=True)
def threshold_pack_rows(y, sign, bound, out):
    """``_numba.threshold_pack`` for float32 rows y (M, N) of whole 64-column words: each word by
    ``threshold_bits``' vector compares instead of 64 scalar tests."""
    for i in prange(y.shape[0]):
        threshold_words(y[i], sign, bound, y.shape[1], out[i])


def _inside_bits(is_float: bool):
    """The intrinsic ``(values_address, low_address, high_address) -> uint64`` whose bit j is
    low[j] <= values[j] <= high[j] over 64 entries each, int32 or float32 (integer sums held
    exactly in float32 compare as they are, with no conversion)."""
    element = ir.FloatType() if is_float else ir.IntType(32)

    @intrinsic
    def inside_bits(typingctx, values_address, low_address, high_address):
        sig = types.uint64(types.uintp, types.uintp, types.uintp)

        def codegen(context, builder, signature, args):
            vector = ir.VectorType(element, WORD)
            values, low, high = (builder.load(builder.inttoptr(a, vector.as_pointer()), align=4) for a in args)
            if is_float:
                inside = builder.and_(builder.fcmp_ordered(">=", values, low), builder.fcmp_ordered("<=", values, high))
            else:
                inside = builder.and_(builder.icmp_signed(">=", values, low), builder.icmp_signed("<=", values, high))
            return builder.bitcast(inside, ir.IntType(WORD))

        return sig, codegen

    return inside_bits


def _inside_words(bits):
    @njit(inline="always")
    def inside_words(values_address, low, high, out):
        """out[w] = the inside bits of entries 64 w .. 64 w + 63 of the values at ``values_address``
        for every word w of out; low and high padded to whole words."""
        for word in range(out.shape[0]):
            at = word * WORD
            out[word] = bits(values_address + at * 4, low[at:].ctypes.data, high[at:].ctypes.data)

    return inside_words


inside_bits, float_inside_bits = _inside_bits(False), _inside_bits(True)
inside_words, float_inside_words = _inside_words(inside_bits), _inside_words(float_inside_bits)
