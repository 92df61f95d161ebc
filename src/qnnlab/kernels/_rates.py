"""The machine's binary multiply-accumulate rate, measured rather than assumed: a loop on registers
only (no memory), independent chains of vectors, each step XOR, popcount (VPOPCNTQ where the CPU
has it) and add, i.e. 64 binary multiply-accumulates per 64-bit lane; each count is the next
step's operand, so the compiler cannot fold the loop. A GEMM's rate divided by this one says how
close to the arithmetic bound it runs.

The loop runs in several shapes (``SHAPES``: chains x 64-bit lanes) and the machine's rate is the
best of them: sixteen chains of 512-bit vectors keep an AVX-512 CPU's pipes full, while on an AVX2
CPU (16 vector registers, popcount spelled as byte lookups) they spill to memory and four chains
of 256-bit vectors run 1.7x faster."""

from __future__ import annotations

from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

SHAPES = ((16, 8), (8, 8), (4, 8), (4, 4))  # (chains, 64-bit lanes per vector)


def macs_per_step(chains: int, lanes: int) -> int:
    return chains * lanes * 64


def _loop(chains: int, lanes: int):
    """The chains' loop as an intrinsic: ``steps`` steps; returns their total popcount (so
    nothing is dead)."""

    @intrinsic
    def xor_popcount_loop(typingctx, steps):
        return types.uint64(types.intp), lambda context, builder, signature, args: _codegen(
            builder, args[0], chains, lanes
        )

    return xor_popcount_loop


def _codegen(builder, count, chains, lanes):
    word = ir.IntType(64)
    vector = ir.VectorType(word, lanes)
    ctpop = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vector, [vector]), f"llvm.ctpop.v{lanes}i64")
    reduce = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(word, [vector]), f"llvm.vector.reduce.add.v{lanes}i64"
    )
    other = ir.Constant(vector, [0x9E3779B97F4A7C15 >> lane for lane in range(lanes)])
    values = [
        cgutils.alloca_once_value(builder, ir.Constant(vector, [c * 7919 + lane for lane in range(lanes)]))
        for c in range(chains)
    ]
    sums = [cgutils.alloca_once_value(builder, ir.Constant(vector, [0] * lanes)) for _ in range(chains)]
    with cgutils.for_range(builder, count):
        for value, total in zip(values, sums):  # the count feeds the next XOR: nothing to fold
            counted = builder.call(ctpop, [builder.xor(builder.load(value), other)])
            builder.store(counted, value)
            builder.store(builder.add(builder.load(total), counted), total)
    result = ir.Constant(word, 0)
    for total in sums:
        result = builder.add(result, builder.call(reduce, [builder.load(total)]))
    return result


def _runner(chains: int, lanes: int):
    loop = _loop(chains, lanes)

    @njit(parallel=True, nogil=True)
    def run_loops(steps, out):
        """One loop of ``steps`` steps per element of ``out`` (one per thread), in parallel."""
        for t in prange(out.shape[0]):
            out[t] = loop(steps)

    return run_loops


RUNNERS = {shape: _runner(*shape) for shape in SHAPES}
