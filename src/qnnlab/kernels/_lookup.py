"""Weight-only binary products by table lookup (the method of T-MAC, Wei et al. 2024, arXiv
2407.00088): real inputs x against 0/1 weight bits, S[j] = sum of x over the set bits of row j
(``sign_weight_matmul`` turns it into x . w = 2 S - sum(x) for +-1 weights).

Each group of four consecutive inputs x[4g .. 4g+3] gets a table of its 16 subset sums,
T[g][m] = sum of x[4g + i] over the set bits i of m, built once per row of x. A row's four weight
bits for group g are then an index: one permute instruction looks up 16 or 32 rows' partial sums
at once (AVX-512 ``vpermps`` for float32 x, ``vpermw`` for int8 x in int16 lanes) and one add
accumulates them, four multiply-accumulates per lane and instruction; the masked additions of
``kernels._masked`` do one, each behind a mask-register load that on Intel is slower than the
addition.

The lookups need the weights transposed in panels (``weight_panels``): for a block of ``lanes`` rows
and a column of ``lane_bits`` weights, the rows' bits side by side in one 512-bit vector, so lane
r's nibble n indexes group (column x lane_bits / 4 + n) of row r; shifting the vector right by 4
brings the next nibble down (the permutes read only an index's low bits: 4 of them for the 16
float entries; for int16 the 32-entry table holds the 16 sums twice, so the fifth bit, the next
nibble's lowest, does not matter). int8 sums stay exact: one group's sum is at most 4 x 128 = 512
in magnitude, so int16 lanes take ``INT16_COLUMNS`` columns of 16 weights before they are
widened into int32.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

BLOCKS = 4  # register blocks (of 16 or 32 rows) per call: each table vector loaded serves all four
INT16_COLUMNS = 15  # 15 columns x 4 groups x 512 = 30720 < 2**15: no int16 lane overflows
PERMUTES = {32: ("llvm.x86.avx512.permvar.sf.512", ir.FloatType()), 16: ("llvm.x86.avx512.permvar.hi.512", None)}


def weight_panels(words: np.ndarray, lane_bits: int) -> np.ndarray:
    """Packed rows (N, W) uint64 -> (ceil(N / lanes), W * 64 / lane_bits, lanes) of lane_bits-wide
    unsigned chunks, lanes = 512 / lane_bits rows per block, missing rows zero."""
    lanes = 512 // lane_bits
    chunks = words.view(np.uint32 if lane_bits == 32 else np.uint16)
    rows = -(-chunks.shape[0] // lanes) * lanes
    padded = np.zeros((rows, chunks.shape[1]), dtype=chunks.dtype)
    padded[: chunks.shape[0]] = chunks
    return np.ascontiguousarray(padded.reshape(rows // lanes, lanes, -1).transpose(0, 2, 1))


SUBSET_BITS = np.array([[(m >> b) & 1 for m in range(32)] for b in range(4)], dtype=np.bool_)  # m >= 16: m - 16


@njit(cache=True, nogil=True)
def subset_sums(x, tables):
    """tables[i, g, m] = sum of x[i, 4 g + b] over the set bits b of m (m < 16), repeated at m + 16
    where the table has 32 entries; x (M, 4 G) zero-padded. Serial: a few microseconds a row,
    less than starting the pool for a second parallel region."""
    bits = SUBSET_BITS
    zero = tables.dtype.type(0)
    for i in range(x.shape[0]):
        for g in range(tables.shape[1]):
            x0, x1, x2, x3 = x[i, 4 * g], x[i, 4 * g + 1], x[i, 4 * g + 2], x[i, 4 * g + 3]
            t = tables[i, g]
            for m in range(tables.shape[2]):  # vectorised: four selects and three additions per vector
                t[m] = (
                    (x0 if bits[0, m] else zero)
                    + (x1 if bits[1, m] else zero)
                    + (x2 if bits[2, m] else zero)
                    + (x3 if bits[3, m] else zero)
                )


def _lookup_sums(blocks: int, lane_bits: int):
    """An intrinsic ``(tables_address, panels_address, columns, out_address) -> none``: the sums of
    ``blocks`` consecutive register blocks of rows (``columns`` panel vectors each) into
    blocks x lanes int32 or float32 at out_address."""
    name, float_type = PERMUTES[lane_bits]
    lanes = 512 // lane_bits
    nibbles = lane_bits // 4
    is_float = float_type is not None
    element = float_type if is_float else ir.IntType(16)
    vector = ir.VectorType(element, lanes)
    index_vector = ir.VectorType(ir.IntType(lane_bits), lanes)
    wide = ir.VectorType(ir.FloatType() if is_float else ir.IntType(32), lanes)

    @intrinsic
    def lookup_sums(typingctx, tables_address, panels_address, columns, out_address):
        sig = types.void(types.uintp, types.uintp, types.intp, types.uintp)

        def codegen(context, builder, signature, args):
            t_addr, p_addr, count, o_addr = args
            index = count.type
            permute = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vector, [vector, index_vector]), name
            )
            tables = builder.inttoptr(t_addr, vector.as_pointer())
            weights = builder.inttoptr(p_addr, index_vector.as_pointer())
            zero = ir.Constant(vector, [0.0 if is_float else 0] * lanes)
            acc = [cgutils.alloca_once_value(builder, zero) for _ in range(blocks)]
            total = [cgutils.alloca_once_value(builder, ir.Constant(wide, [0] * lanes)) for _ in range(blocks)]

            def add_columns(start, stop):
                with cgutils.for_range_slice(builder, start, stop, ir.Constant(index, 1)) as (c, _):
                    first = builder.mul(c, ir.Constant(index, nibbles))
                    table = [
                        builder.load(builder.gep(tables, [builder.add(first, ir.Constant(index, n))]), align=4)
                        for n in range(nibbles)
                    ]
                    for u in range(blocks):
                        at = builder.add(builder.mul(count, ir.Constant(index, u)), c)
                        bits = builder.load(builder.gep(weights, [at]), align=4)
                        shifted = [bits] + [builder.lshr(bits, _spread(index_vector, 4 * n)) for n in range(1, nibbles)]
                        looked = [builder.call(permute, [table[n], shifted[n]]) for n in range(nibbles)]
                        builder.store(_tree_sum(builder, [builder.load(acc[u]), *looked], is_float), acc[u])

            if is_float:
                add_columns(ir.Constant(index, 0), count)
                sums = [builder.load(a) for a in acc]
            else:  # INT16_COLUMNS columns at a time in int16 lanes, each run widened into int32
                step = ir.Constant(index, INT16_COLUMNS)
                runs = builder.udiv(builder.add(count, ir.Constant(index, INT16_COLUMNS - 1)), step)
                with cgutils.for_range(builder, runs) as run:
                    start = builder.mul(run.index, step)
                    stop = builder.add(start, step)
                    add_columns(start, builder.select(builder.icmp_unsigned("<", stop, count), stop, count))
                    for u in range(blocks):
                        widened = builder.sext(builder.load(acc[u]), wide)
                        builder.store(builder.add(builder.load(total[u]), widened), total[u])
                        builder.store(zero, acc[u])
                sums = [builder.load(t) for t in total]
            out = builder.inttoptr(o_addr, wide.as_pointer())
            for u, s in enumerate(sums):
                builder.store(s, builder.gep(out, [ir.Constant(index, u)]), align=4)
            return context.get_dummy_value()

        return sig, codegen

    return lookup_sums


def _spread(kind: ir.VectorType, value: int) -> ir.Constant:
    return ir.Constant(kind, [value] * kind.count)


def _tree_sum(builder, values: list, is_float: bool):
    """The sum of ``values`` added pairwise: a chain of log2 additions, not one per value (float
    additions take four cycles each)."""
    while len(values) > 1:
        pairs = [
            builder.fadd(a, b, flags=["fast"]) if is_float else builder.add(a, b)
            for a, b in zip(values[::2], values[1::2])
        ]
        values = pairs + values[len(pairs) * 2 :]
    return values[0]


def _products(many, one):
    """The parallel ``(tables, panels, out)``: out[i, lanes b + r] = the sum of row (lanes b + r)
    for x's row i, ``many`` running BLOCKS register blocks at a time and ``one`` the last ones.
    tables (M, G, entries) from ``subset_sums``, panels (B, C, lanes), out (M, B x lanes)."""

    @njit(parallel=True, cache=True, nogil=True)
    def products(tables, panels, out):
        m, (blocks, columns, lanes) = tables.shape[0], panels.shape
        tasks = (blocks + BLOCKS - 1) // BLOCKS
        block_bytes = columns * lanes * panels.itemsize
        for task in prange(m * tasks):
            i, b = task // tasks, (task % tasks) * BLOCKS
            t_addr = tables.ctypes.data + i * tables.shape[1] * tables.shape[2] * tables.itemsize
            o_addr = out.ctypes.data + (i * out.shape[1] + b * lanes) * out.itemsize
            if b + BLOCKS <= blocks:
                many(t_addr, panels.ctypes.data + b * block_bytes, columns, o_addr)
            else:
                for bb in range(b, blocks):
                    one(t_addr, panels.ctypes.data + bb * block_bytes, columns, o_addr + (bb - b) * lanes * 4)

    return products


float_products = _products(_lookup_sums(BLOCKS, 32), _lookup_sums(1, 32))
int_products = _products(_lookup_sums(BLOCKS, 16), _lookup_sums(1, 16))
