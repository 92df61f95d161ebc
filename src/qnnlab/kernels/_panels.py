"""The binary GEMM as outer products on registers: out[i, j] = k - 2 popcount(a[i] XOR b[j]).

b is laid out in panels of ``COLUMNS`` rows, transposed (panel, word, column), so one panel word
for 32 columns is four 512-bit vectors. A tile of ``ROWS`` rows of a by one panel keeps its 24
accumulator vectors in registers (with the panel's four and a broadcast: 29 of the 32): per word,
each row's word is broadcast, XORed with the four vectors, popcounted (VPOPCNTQ) and added, three
vector operations per 512 binary multiply-accumulates (the bound ``kernels._rates`` measures)
and no horizontal reduction. A panel (32 columns x K bits) stays in L1 while every row of a
streams past it."""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from qnnlab.kernels._numba import popcount

ROWS = 6
COLUMNS = 32
LANES = 8  # 64-bit lanes per 512-bit vector
STREAM_BYTES = 2 * 1024 * 1024  # outputs from this size written past the caches (an L2 holds 1-2 MiB)
A_BLOCK_BYTES = 512 * 1024  # rows of a kept in L2 while every panel passes (L2: 1 MiB on Zen 5, 2 MiB on Xeons)


def outer_products(builder, count, acc, column_at, spread_at, step, offsets=None) -> None:
    """Emit the loop every register tile runs: for t < ``count``, acc[r][p] = step(acc[r][p],
    spread_at(u, r), column_at(t, p)), the panel's vectors loaded once per t and each row's
    operand broadcast once; u is t, or offsets[t] with ``offsets`` (a pointer to int64: the taps of
    a convolution read in the image itself). ``step`` makes it a binary (XOR, popcount, add),
    float (multiply-add) or 8-bit (VPDPBUSD) outer product."""
    with cgutils.for_range(builder, count) as loop:
        columns = [column_at(loop.index, p) for p in range(len(acc[0]))]
        at = loop.index if offsets is None else builder.load(builder.gep(offsets, [loop.index]))
        for r, row in enumerate(acc):
            spread = spread_at(at, r)
            for v, column in zip(row, columns):
                builder.store(step(builder.load(v), spread, column), v)


def panel_vectors(builder, panel_ptr, parts: int, align: int):
    """``column_at`` for ``outer_products``: vector p of the panel's row t, rows ``parts`` vectors long."""

    def column_at(t, p):
        at = builder.add(builder.mul(t, ir.Constant(t.type, parts)), ir.Constant(t.type, p))
        return builder.load(builder.gep(panel_ptr, [at]), align=align)

    return column_at


def _count_tile(builder, a_ptr, a_stride, panel_ptr, count, acc, offsets=None) -> None:
    """Emit acc[r][v] (lanes 8 v .. 8 v + 7) += sum_t popcount(a[r, t] XOR panel[t, column]) for
    the rows r of a (``a_stride`` words apart; one per row of ``acc``) and the panel's COLUMNS
    columns; with ``offsets`` (a pointer to int64), word t of row r is a[r a_stride + offsets[t]]
    instead, e.g. the taps of a convolution read in the image itself."""
    vector = ir.VectorType(ir.IntType(64), LANES)
    ctpop = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vector, [vector]), f"llvm.ctpop.v{LANES}i64")

    def spread_at(word_at, r):
        at = builder.add(builder.mul(a_stride, ir.Constant(word_at.type, r)), word_at)
        return splat(builder, builder.load(builder.gep(a_ptr, [at]), align=8), vector)

    def step(total, spread, column):
        return builder.add(total, builder.call(ctpop, [builder.xor(spread, column)]))

    column_at = panel_vectors(builder, panel_ptr, COLUMNS // LANES, 8)
    outer_products(builder, count, acc, column_at, spread_at, step, offsets)


def _vectors(builder, count: int = ROWS) -> list[list[ir.Value]]:
    """``count`` rows x (COLUMNS / LANES) zeroed <LANES x i64> accumulators."""
    zero = ir.Constant(ir.VectorType(ir.IntType(64), LANES), [0] * LANES)
    return [[cgutils.alloca_once_value(builder, zero) for _ in range(COLUMNS // LANES)] for _ in range(count)]


def store_rows(builder, out_addr, out_step, values, streaming: bool = False) -> None:
    """Store values[r][v] (vectors of n lanes) at out row r (``out_step`` elements apart), from
    element n v on: a tile's accumulators written back to its rows. ``streaming``: non-temporal
    stores, which write whole lines without first reading them into the cache; each vector's
    address must then be a multiple of its size, and ``store_fence`` must follow before others
    read the output."""
    lanes = values[0][0].type
    out_ptr = builder.inttoptr(out_addr, lanes.element.as_pointer())
    index = out_step.type
    hint = builder.module.add_metadata([ir.Constant(ir.IntType(32), 1)]) if streaming else None
    align = lanes.count * lanes.element.width // 8 if streaming else 4  # streamed: integer lanes
    for r, row_values in enumerate(values):
        row = builder.gep(out_ptr, [builder.mul(out_step, ir.Constant(index, r))])
        for p, value in enumerate(row_values):
            target = builder.bitcast(builder.gep(row, [ir.Constant(index, p * lanes.count)]), lanes.as_pointer())
            store = builder.store(value, target, align=align)
            if streaming:
                store.set_metadata("nontemporal", hint)


@intrinsic
def store_fence(typingctx):
    """A full memory fence: orders the non-temporal stores before it (``store_rows``) with what follows."""

    def codegen(context, builder, signature, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.void(), codegen


def by_rows(builder, rows, most: int, emit) -> None:
    """Emit ``emit(r)`` for each r in 1..``most`` under a switch on the run-time count ``rows``
    (other counts do nothing): one intrinsic serves every tile height, and where ``rows`` is a
    constant LLVM keeps only its case."""
    done = builder.append_basic_block("rows.done")
    switch = builder.switch(rows, done)
    for r in range(1, most + 1):
        block = builder.append_basic_block(f"rows.{r}")
        switch.add_case(ir.Constant(rows.type, r), block)
        builder.position_at_end(block)
        emit(r)
        builder.branch(done)
    builder.position_at_end(done)


def _signed_tile(with_offsets: bool, streaming: bool = False):
    """An intrinsic ``(rows, a_address, a_words, panel_address, words, out_address, out_stride, k)``:
    out[r, j] (int32, rows ``out_stride`` apart) = k - 2 sum_t popcount(a[r, t] XOR panel[t, j])
    over ``rows`` (1..ROWS) rows of a (``a_words`` apart) and one panel's COLUMNS columns: the +-1
    product. ``with_offsets``: an extra argument after ``a_words``, the address of int64 offsets,
    word t of row r being a[r a_words + offsets[t]] (``_count_tile``). ``streaming``: the rows
    written by non-temporal stores (``store_rows``; out 64-byte aligned, ``out_stride`` a multiple
    of 16)."""

    def codegen(context, builder, signature, args):
        if with_offsets:
            rows, a_addr, a_stride, offsets_addr, panel_addr, count, out_addr, out_step, k_value = args
            offsets = builder.inttoptr(offsets_addr, ir.IntType(64).as_pointer())
        else:
            rows, a_addr, a_stride, panel_addr, count, out_addr, out_step, k_value = args
            offsets = None
        vector = ir.VectorType(ir.IntType(64), LANES)
        words32 = ir.VectorType(ir.IntType(32), 2 * LANES)
        k_lanes = splat(builder, builder.trunc(k_value, ir.IntType(32)), words32)
        one = ir.Constant(words32, [1] * 2 * LANES)
        a_ptr = builder.inttoptr(a_addr, ir.IntType(64).as_pointer())
        panel = builder.inttoptr(panel_addr, vector.as_pointer())

        def emit(height):
            acc = _vectors(builder, height)
            _count_tile(builder, a_ptr, a_stride, panel, count, acc, offsets)
            values = [
                [builder.sub(k_lanes, builder.shl(v, one)) for v in narrowed(builder, [builder.load(v) for v in row])]
                for row in acc
            ]
            store_rows(builder, out_addr, out_step, values, streaming)

        by_rows(builder, rows, ROWS, emit)
        return context.get_dummy_value()

    if with_offsets:

        @intrinsic
        def tile(typingctx, rows, a_address, a_words, offsets_address, panel_address, words, out, out_stride, k):
            index, address = types.intp, types.uintp
            return types.void(index, address, index, address, address, index, address, index, types.int64), codegen

    else:

        @intrinsic
        def tile(typingctx, rows, a_address, a_words, panel_address, words, out, out_stride, k):
            index, address = types.intp, types.uintp
            return types.void(index, address, index, address, index, address, index, types.int64), codegen

    return tile


signed_tile = _signed_tile(with_offsets=False)
streaming_tile = _signed_tile(with_offsets=False, streaming=True)  # for outputs larger than the caches
conv_tile = _signed_tile(with_offsets=True)  # pixels of a convolution, each tap's words at its offset in the image


@intrinsic
def planes_tile(
    typingctx,
    a_address,
    a_words,
    a_plane_words,
    a_planes,
    panel_address,
    panel_plane_words,
    b_planes,
    weights_address,
    words,
    out_address,
    out_stride,
):
    """out[r, j] (int64) = sum_pq weights[p, q] sum_t popcount(a_p[r, t] XOR panel_q[t, j]) over the
    bit planes of a (``a_plane_words`` apart) and of the panel (``panel_plane_words`` apart): each
    pair's counts are weighted into totals kept beside the registers, out written once."""
    sig = types.void(
        types.uintp,
        types.intp,
        types.intp,
        types.intp,
        types.uintp,
        types.intp,
        types.intp,
        types.uintp,
        types.intp,
        types.uintp,
        types.intp,
    )

    def codegen(context, builder, signature, args):
        (
            a_addr,
            a_stride,
            a_plane,
            a_count,
            panel_addr,
            panel_plane,
            b_count,
            weights_addr,
            count,
            out_addr,
            out_step,
        ) = args
        word = ir.IntType(64)
        vector = ir.VectorType(word, LANES)
        totals, acc = _vectors(builder), _vectors(builder)
        a_base = builder.inttoptr(a_addr, word.as_pointer())
        panel_base = builder.inttoptr(panel_addr, vector.as_pointer())
        weights = builder.inttoptr(weights_addr, word.as_pointer())
        zero = ir.Constant(vector, [0] * LANES)
        parts = ir.Constant(count.type, LANES)
        with cgutils.for_range(builder, a_count) as p_loop, cgutils.for_range(builder, b_count) as q_loop:
            for row in acc:
                for v in row:
                    builder.store(zero, v)
            a_ptr = builder.gep(a_base, [builder.mul(p_loop.index, a_plane)])
            panel_ptr = builder.gep(panel_base, [builder.udiv(builder.mul(q_loop.index, panel_plane), parts)])
            _count_tile(builder, a_ptr, a_stride, panel_ptr, count, acc)
            pair = builder.add(builder.mul(p_loop.index, b_count), q_loop.index)
            weight = splat(builder, builder.load(builder.gep(weights, [pair])), vector)
            for total_row, acc_row in zip(totals, acc):
                for total, v in zip(total_row, acc_row):
                    builder.store(builder.add(builder.load(total), builder.mul(weight, builder.load(v))), total)
        store_rows(builder, out_addr, out_step, [[builder.load(v) for v in row] for row in totals])
        return context.get_dummy_value()

    return sig, codegen


def narrowed(builder: ir.IRBuilder, vectors: list[ir.Value]) -> list[ir.Value]:
    """Pairs of <n x i64> counts (small enough for 32 bits) -> one <2n x i32> each, in order: the low
    halves of both picked by one two-source permute, where truncating each apart takes two."""
    lanes = vectors[0].type.count
    halves = ir.VectorType(ir.IntType(32), 2 * lanes)
    low = ir.Constant(ir.VectorType(ir.IntType(32), 2 * lanes), list(range(0, 4 * lanes, 2)))
    pairs = zip(vectors[::2], vectors[1::2])
    return [builder.shuffle_vector(builder.bitcast(x, halves), builder.bitcast(y, halves), low) for x, y in pairs]


def splat(builder: ir.IRBuilder, value: ir.Value, vector: ir.VectorType) -> ir.Value:
    """``value`` in every lane of ``vector``."""
    first = builder.insert_element(ir.Constant(vector, None), value, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(
        first, ir.Constant(vector, None), ir.Constant(ir.VectorType(ir.IntType(32), vector.count), [0] * vector.count)
    )


def panels_shape(b_shape: tuple[int, int]) -> tuple[int, int, int]:
    return ((b_shape[0] + COLUMNS - 1) // COLUMNS, b_shape[1], COLUMNS)


def panels(b: np.ndarray) -> np.ndarray:
    """b (N, W) uint64 -> (ceil(N / COLUMNS), W, COLUMNS): each panel transposed, missing rows zero."""
    out = np.zeros(panels_shape(b.shape), dtype=np.uint64)
    _transpose_panels(b, out)
    return out


@njit(cache=True, nogil=True)  # serial: a parallel call here would start numba's pool behind kernels._pool()
def _transpose_panels(b, out):
    n, words = b.shape
    for p in range(out.shape[0]):
        for c in range(min(COLUMNS, n - p * COLUMNS)):
            for t in range(words):
                out[p, t, c] = b[p * COLUMNS + c, t]


@njit(parallel=True, cache=True, nogil=True)
def gemm(a, b_panels, b_rows, k, out):
    """out (M, N) int32 = k - 2 popcount(a XOR b) for a (M, W) and b as ``panels(b)`` (and as rows,
    for the edges): tiles on registers (the last M % ROWS rows by a shorter tile), the last N %
    COLUMNS columns one product at a time. Rows of a go in blocks of ``A_BLOCK_BYTES``, each
    block meeting every panel while it stays in L2 (a whole large a would stream from L3 past each
    panel), one parallel region per block: the short tile joins the last block's, and the last
    columns start a region only where there are some. An output of ``STREAM_BYTES`` or more,
    which no cache keeps, is written by non-temporal stores where its rows align, so its lines
    are not first read into the cache."""
    m, words = a.shape
    n = out.shape[1]
    full_rows, full_panels = m - m % ROWS, n // COLUMNS
    block = max(ROWS, A_BLOCK_BYTES // (words * 8) // ROWS * ROWS)
    streaming = out.size * 4 >= STREAM_BYTES and out.ctypes.data % 64 == 0 and n % 16 == 0
    for start in range(0, m, block):
        stop = min(full_rows, start + block)
        for p in prange(full_panels):
            panel = b_panels.ctypes.data + p * words * COLUMNS * 8
            for i in range(start, stop, ROWS):
                target = out.ctypes.data + (i * n + p * COLUMNS) * 4
                if streaming:
                    streaming_tile(ROWS, a.ctypes.data + i * words * 8, words, panel, words, target, n, k)
                else:
                    signed_tile(ROWS, a.ctypes.data + i * words * 8, words, panel, words, target, n, k)
            if start + block >= m and full_rows < m:
                target = out.ctypes.data + (full_rows * n + p * COLUMNS) * 4
                signed_tile(m - full_rows, a.ctypes.data + full_rows * words * 8, words, panel, words, target, n, k)
            if streaming:
                store_fence()
    if full_panels * COLUMNS < n:
        for i in prange(m):
            for j in range(full_panels * COLUMNS, n):
                count = np.uint64(0)
                for t in range(words):
                    count += popcount(a[i, t] ^ b_rows[j, t])
                out[i, j] = k - 2 * np.int64(count)


@njit(parallel=True, cache=True, nogil=True)
def weighted_plane_counts(a, b_panels, b_rows, weights, out):
    """out (M, N) int64 = sum_pq weights[p, q] popcount(a_p XOR b_q) for bit planes a (P, M, W) and
    b (Q, N, W), b also as panels (Q, panels, W, COLUMNS): one pass over out for all plane pairs."""
    planes_a, m, words = a.shape
    planes_b, n = b_rows.shape[0], out.shape[1]
    panel_count = b_panels.shape[1]
    full_rows, full_panels = m - m % ROWS, n // COLUMNS
    for p in prange(full_panels):
        panel = b_panels.ctypes.data + p * words * COLUMNS * 8
        for i in range(0, full_rows, ROWS):
            target = out.ctypes.data + (i * n + p * COLUMNS) * 8
            planes_tile(
                a.ctypes.data + i * words * 8,
                words,
                m * words,
                planes_a,
                panel,
                panel_count * words * COLUMNS,
                planes_b,
                weights.ctypes.data,
                words,
                target,
                n,
            )
    for i in prange(m):
        for j in range(0 if i >= full_rows else full_panels * COLUMNS, n):
            total = np.int64(0)
            for pa in range(planes_a):
                for pb in range(planes_b):
                    count = np.uint64(0)
                    for t in range(words):
                        count += popcount(a[pa, i, t] ^ b_rows[pb, j, t])
                    total += weights[pa, pb] * np.int64(count)
            out[i, j] = total


@njit(parallel=True, cache=True, nogil=True)
def row_popcounts(words, out):
    """out[i] = the number of set bits in row i of ``words`` (R, W)."""
    for i in prange(words.shape[0]):
        count = np.uint64(0)
        for t in range(words.shape[1]):
            count += popcount(words[i, t])
        out[i] = np.int64(count)


@njit(parallel=True, cache=True, nogil=True)
def halve_with_margins(twice, rows, columns):
    """twice[i, j] = (twice[i, j] + rows[i] + columns[j]) / 2, in place (the sum is even)."""
    for i in prange(twice.shape[0]):
        for j in range(twice.shape[1]):
            twice[i, j] = (twice[i, j] + rows[i] + columns[j]) >> 1
