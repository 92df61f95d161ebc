"""The machine's binary multiply-accumulate rate, measured rather than assumed: a loop on registers
only (no memory), sixteen independent chains of 512-bit vectors, each step XOR, popcount (VPOPCNTQ
where the CPU has it) and add, i.e. 512 binary multiply-accumulates; each count is the next
step's operand, so the compiler cannot fold the loop. A GEMM's rate divided by this one says how close to
the arithmetic bound it runs."""

from __future__ import annotations

from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

CHAINS = 16
LANES = 8  # 64-bit lanes of a 512-bit vector
MACS_PER_STEP = CHAINS * LANES * 64


@intrinsic
def xor_popcount_loop(typingctx, steps):
    """Run ``steps`` steps of the chains; returns their total popcount (so nothing is dead)."""
    sig = types.uint64(types.intp)

    def codegen(context, builder, signature, args):
        (count,) = args
        word = ir.IntType(64)
        vector = ir.VectorType(word, LANES)
        ctpop = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vector, [vector]), f"llvm.ctpop.v{LANES}i64"
        )
        reduce = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(word, [vector]), f"llvm.vector.reduce.add.v{LANES}i64"
        )
        other = ir.Constant(vector, [0x9E3779B97F4A7C15 >> lane for lane in range(LANES)])
        values = [
            cgutils.alloca_once_value(builder, ir.Constant(vector, [c * 7919 + lane for lane in range(LANES)]))
            for c in range(CHAINS)
        ]
        sums = [cgutils.alloca_once_value(builder, ir.Constant(vector, [0] * LANES)) for _ in range(CHAINS)]
        with cgutils.for_range(builder, count):
            for value, total in zip(values, sums):  # the count feeds the next XOR: nothing to fold
                counted = builder.call(ctpop, [builder.xor(builder.load(value), other)])
                builder.store(counted, value)
                builder.store(builder.add(builder.load(total), counted), total)
        result = ir.Constant(word, 0)
        for total in sums:
            result = builder.add(result, builder.call(reduce, [builder.load(total)]))
        return result

    return sig, codegen


@njit(parallel=True, cache=True, nogil=True)
def run_loops(steps, out):
    """One loop of ``steps`` steps per element of ``out`` (one per thread), in parallel."""
    for t in prange(out.shape[0]):
        out[t] = xor_popcount_loop(steps)
