"""Weight-only binary products as masked vector additions: real (float32) or int8 inputs x against
+-1 weights packed 64 to a word, x . w = 2 (sum of x over the set bits) - sum(x).

Each 64-bit weight word is reinterpreted as lane masks (``<16 x i1>`` for float32, ``<32 x i1>``
for int16-widened int8), and the 64 inputs it covers are added under those masks into vector
accumulators: no multiplication and no table. With AVX-512 each mask is loaded from the packed
weights straight into a mask register (``kmovw`` / ``kmovd`` from memory, not shifted out of a
64-bit word first) and each addition is one masked ``vaddps`` / ``vpaddw``; other CPUs get
LLVM's blend equivalent. The
int8 version accumulates in int16 lanes for at most ``INT16_WORDS`` words (|x| <= 128, so no
lane can overflow) before widening into int32, which keeps its results exact. Inputs must be
padded with zeros to whole words (the packed weights' tail bits are clear).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

ROWS = 4  # weight rows per call: each loaded input vector serves four rows
PREFETCH_TYPE = ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer(), *[ir.IntType(32)] * 3])
PREFETCH_READ = [ir.Constant(ir.IntType(32), v) for v in (0, 3, 1)]  # read, keep in all levels, data
INT16_WORDS = 255  # 255 words x 128 (the largest |int8|) = 32640 < 2**15: no int16 lane overflows


def _masked_sums(rows: int, lane_bits: int, widen_every: int):
    """An intrinsic ``(x_address, w_address, row_stride, words) -> UniTuple(rows)``: for each of
    ``rows`` weight rows (``row_stride`` words apart) the sum of x[64 q + l] over the set bits l
    of its words q, prefetching the rows ``rows`` further down (the next call's). ``lane_bits`` 32:
    float32 x, float sums; 16: int8 x widened to int16 lanes, int64 sums, folded from the int16
    lanes into int32 lanes every ``widen_every`` words."""
    lanes = 512 // lane_bits  # one 512-bit vector of accumulators
    parts = 64 // lanes  # vectors per weight word
    is_float = lane_bits == 32
    element = ir.FloatType() if is_float else ir.IntType(16)
    stored = ir.FloatType() if is_float else ir.IntType(8)  # x as it lies in memory
    result = types.float32 if is_float else types.int64

    @intrinsic
    def masked_sums(typingctx, x_address, w_address, row_stride, words):
        sig = types.UniTuple(result, rows)(types.uintp, types.uintp, types.intp, types.intp)

        def codegen(context, builder, signature, args):
            x_addr, w_addr, stride, count = args
            index = count.type
            vector = ir.VectorType(element, lanes)
            wide = ir.VectorType(ir.IntType(32), lanes)
            zero = ir.Constant(vector, [0.0 if is_float else 0] * lanes)
            x_ptr = builder.inttoptr(x_addr, ir.VectorType(stored, lanes).as_pointer())
            mask_pointer = ir.VectorType(ir.IntType(1), lanes).as_pointer()
            w_ptr = builder.inttoptr(w_addr, ir.IntType(64).as_pointer())
            prefetch = cgutils.get_or_insert_function(builder.module, PREFETCH_TYPE, "llvm.prefetch.p0")
            acc = [[cgutils.alloca_once_value(builder, zero) for _ in range(parts)] for _ in range(rows)]
            total = [
                [cgutils.alloca_once_value(builder, ir.Constant(wide, [0] * lanes)) for _ in range(parts)]
                for _ in range(rows if not is_float else 0)
            ]

            def add_words(start, stop):
                with cgutils.for_range_slice(builder, start, stop, _const(index, 1)) as (q, _):
                    inputs = [
                        builder.load(
                            builder.gep(x_ptr, [builder.add(builder.mul(q, _const(index, parts)), _const(index, p))]),
                            align=1,
                        )
                        for p in range(parts)
                    ]
                    if not is_float:
                        inputs = [builder.sext(v, vector) for v in inputs]
                    for r in range(rows):
                        at = builder.add(builder.mul(stride, _const(index, r)), q)
                        ahead = builder.gep(w_ptr, [builder.add(at, builder.mul(stride, _const(index, rows)))])
                        builder.call(prefetch, [builder.bitcast(ahead, ir.IntType(8).as_pointer()), *PREFETCH_READ])
                        # each part's lane mask loaded from memory straight into a mask register
                        word_bytes = builder.bitcast(builder.gep(w_ptr, [at]), ir.IntType(8).as_pointer())
                        for p in range(parts):  # bits lanes p .. lanes p + lanes - 1 of the word
                            part = builder.gep(word_bytes, [_const(index, p * lanes // 8)])
                            bits = builder.load(builder.bitcast(part, mask_pointer), align=lanes // 8)
                            picked = builder.select(bits, inputs[p], zero)
                            summed = (
                                builder.fadd(builder.load(acc[r][p]), picked, flags=["fast"])
                                if is_float
                                else builder.add(builder.load(acc[r][p]), picked)
                            )
                            builder.store(summed, acc[r][p])

            if is_float:
                add_words(_const(index, 0), count)
            else:  # blocks of widen_every words in int16 lanes, each folded into int32 lanes
                blocks = builder.udiv(builder.add(count, _const(index, widen_every - 1)), _const(index, widen_every))
                with cgutils.for_range(builder, blocks) as block:
                    start = builder.mul(block.index, _const(index, widen_every))
                    stop = builder.add(start, _const(index, widen_every))
                    add_words(start, builder.select(builder.icmp_unsigned("<", stop, count), stop, count))
                    for r in range(rows):
                        for p in range(parts):
                            widened = builder.sext(builder.load(acc[r][p]), wide)
                            builder.store(builder.add(builder.load(total[r][p]), widened), total[r][p])
                            builder.store(zero, acc[r][p])
            sums = []
            for r in range(rows):
                vectors = [builder.load(v) for v in (acc[r] if is_float else total[r])]
                folded = vectors[0]
                for v in vectors[1:]:
                    folded = builder.fadd(folded, v, flags=["fast"]) if is_float else builder.add(folded, v)
                if is_float:
                    reduce = cgutils.get_or_insert_function(
                        builder.module,
                        ir.FunctionType(element, [element, vector]),
                        f"llvm.vector.reduce.fadd.v{lanes}f32",
                    )
                    s = builder.call(reduce, [ir.Constant(element, 0.0), folded], fastmath=("fast",))
                else:  # in int64 lanes, so no K overflows the sum
                    longs = ir.VectorType(ir.IntType(64), lanes)
                    reduce = cgutils.get_or_insert_function(
                        builder.module, ir.FunctionType(ir.IntType(64), [longs]), f"llvm.vector.reduce.add.v{lanes}i64"
                    )
                    s = builder.call(reduce, [builder.sext(folded, longs)])
                sums.append(s)
            return context.make_tuple(builder, signature.return_type, sums)

        return sig, codegen

    return masked_sums


def _const(kind: ir.Type, value: int) -> ir.Constant:
    return ir.Constant(kind, value)


def _products(sums, one):
    """The parallel product ``(x, w, totals, out)`` over the intrinsics ``sums`` (ROWS weight rows
    at a time) and ``one`` (the last rows): out[i, j] = 2 sum_q,l [bit l of w[j, q]] x[i, 64 q + l]
    - totals[i], x (M, 64 W) zero-padded, w (N, W) uint64 words, totals[i] = sum(x[i])."""

    @njit(parallel=True, fastmath=True, cache=True, nogil=True)
    def products(x, w, totals, out):
        m, row_bytes = x.shape[0], x.shape[1] * x.itemsize
        n, words = w.shape
        blocks = (n + ROWS - 1) // ROWS
        for task in prange(m * blocks):
            i, j = task // blocks, (task % blocks) * ROWS
            x_addr = x.ctypes.data + i * row_bytes
            if j + ROWS <= n:
                found = sums(x_addr, w.ctypes.data + j * words * 8, words, words)
                for r in range(ROWS):
                    out[i, j + r] = 2 * found[r] - totals[i]
            else:
                for jj in range(j, n):
                    out[i, jj] = 2 * one(x_addr, w.ctypes.data + jj * words * 8, words, words)[0] - totals[i]

    return products


int_sums, int_sum = _masked_sums(ROWS, 16, INT16_WORDS), _masked_sums(1, 16, INT16_WORDS)
sign_weight_float = _products(_masked_sums(ROWS, 32, 0), _masked_sums(1, 32, 0))
sign_weight_int = _products(int_sums, int_sum)


@njit(parallel=True, cache=True, nogil=True)
def read_words(w, out):
    """out[j] = OR of row j's words: one read of the packed weights, the least a product needs."""
    n, words = w.shape
    for j in prange(n):
        acc = np.uint64(0)
        for q in range(words):
            acc |= w[j, q]
        out[j] = acc
