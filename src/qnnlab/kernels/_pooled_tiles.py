"""The binary convolution's register tile with its padding correction and max pooling in the
epilogue: the tile's sums go straight into the pooled row, without an int32 row of sums written,
corrected along the border and pooled in three further passes.

``pooled_conv_tile`` computes, for ``rows`` (1..ROWS) output pixels ``first``.. of a convolution
row and the COLUMNS filters of one panel (``_panels.conv_tile``'s product, taps at offsets in a
zero-padded image), v[r] = k - 2 popcount sums + corrections[r] (int32; the corrections take off
what the taps on the zero padding added, ``_fused_conv._row_corrections``), then
best[(first + r) // pool] = max(best[...], v[r]): pooling windows that straddle tiles, or the
rows of a window taken one convolution row at a time, meet in ``best``."""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from qnnlab.kernels._panels import LANES, ROWS, _count_tile, _vectors, by_rows, narrowed, splat


@intrinsic
def pooled_conv_tile(
    typingctx,
    rows,
    a_address,
    a_words,
    offsets_address,
    panel_address,
    words,
    k,
    corrections_address,
    corrections_stride,
    best_address,
    best_stride,
    first,
    pool,
):
    """See the module docstring. Rows of corrections and of best (int32) are ``corrections_stride``
    and ``best_stride`` elements apart; both addresses point at the panel's first column."""
    index, address = types.intp, types.uintp
    sig = types.void(
        index, address, index, address, address, index, types.int64, address, index, address, index, index, index
    )

    def codegen(context, builder, signature, args):
        height, a_addr, a_stride, offsets_addr, panel_addr, count, k_value = args[:7]
        corr_addr, corr_step, best_addr, best_step, first_pixel, pool_size = args[7:]
        word = ir.IntType(64)
        words32 = ir.VectorType(ir.IntType(32), 2 * LANES)
        k_lanes = splat(builder, builder.trunc(k_value, ir.IntType(32)), words32)
        one = ir.Constant(words32, [1] * 2 * LANES)
        a_ptr = builder.inttoptr(a_addr, word.as_pointer())
        panel = builder.inttoptr(panel_addr, ir.VectorType(word, LANES).as_pointer())
        offsets = builder.inttoptr(offsets_addr, word.as_pointer())
        corrections = builder.inttoptr(corr_addr, ir.IntType(32).as_pointer())
        best = builder.inttoptr(best_addr, ir.IntType(32).as_pointer())
        smax = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(words32, [words32, words32]), f"llvm.smax.v{2 * LANES}i32"
        )

        def vector_at(base, row_offset, part):
            at = builder.add(row_offset, ir.Constant(row_offset.type, part * 2 * LANES))
            return builder.bitcast(builder.gep(base, [at]), words32.as_pointer())

        def emit(height):
            acc = _vectors(builder, height)
            _count_tile(builder, a_ptr, a_stride, panel, count, acc, offsets)
            for r, row in enumerate(acc):
                sums = narrowed(builder, [builder.load(v) for v in row])
                corr_row = builder.mul(corr_step, ir.Constant(corr_step.type, r))
                pixel = builder.add(first_pixel, ir.Constant(first_pixel.type, r))
                best_row = builder.mul(builder.sdiv(pixel, pool_size), best_step)
                for part, total in enumerate(sums):
                    correction = builder.load(vector_at(corrections, corr_row, part), align=4)
                    value = builder.add(builder.sub(k_lanes, builder.shl(total, one)), correction)
                    target = vector_at(best, best_row, part)
                    builder.store(builder.call(smax, [builder.load(target, align=4), value]), target, align=4)

        by_rows(builder, height, ROWS, emit)
        return context.get_dummy_value()

    return sig, codegen
