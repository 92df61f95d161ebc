"""The 8-bit first layer on registers: unsigned pixel codes times +-1 weights held as int8, with
AVX-512 VNNI's VPDPBUSD, which adds four u8 x s8 products into each 32-bit lane: 64
multiply-accumulates per instruction, as an int8 GEMM does, inside numba (no torch call between
the layers, so a batch runs as one kernel call and no OpenMP pool is woken in between).

``dot4_tile``: out[r, j] = sum_t a[r, t] w[t, j] for up to ``ROWS`` rows of codes a (uint8, K
padded with zeros to whole groups of four) and a panel of ``COLUMNS`` weight columns laid out
(K / 4, COLUMNS, 4) int8: per group, a row's four codes are one broadcast 32-bit word and every
16 columns one VPDPBUSD; the 6 x 4 accumulators stay in registers. This is the one x86
intrinsic in the kernels: it is compiled only where ``available()``, and the runtime otherwise
takes torch's int8 GEMM.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from qnnlab.kernels._panels import by_rows, outer_products, panel_vectors, splat, store_rows

ROWS = 6
COLUMNS = 64
GROUP = 4  # codes per 32-bit lane
LANES = 16


def available() -> bool:
    """Whether numba compiles for this CPU (no NUMBA_CPU_NAME override), the CPU has AVX-512 VNNI
    and LLVM takes VPDPBUSD with int8 vector operands (LLVM 21 and later)."""
    import llvmlite.binding as llvm
    from numba.core import config

    if config.CPU_NAME not in (None, "host"):
        return False
    features = llvm.get_host_cpu_features()
    return llvm.llvm_version_info >= (21,) and bool(features.get("avx512vnni")) and bool(features.get("avx512bw"))


@intrinsic
def dot4_tile(typingctx, rows, a_address, a_stride, panel_address, groups, out_address, out_stride):
    """out[r, j] (int32, rows ``out_stride`` apart) = sum_t a[r, t] panel[t // 4, j, t % 4] for
    ``rows`` (1..ROWS) rows of uint8 codes (``a_stride`` bytes apart) over ``groups`` groups of
    four codes and the panel's COLUMNS columns."""
    sig = types.void(types.intp, types.uintp, types.intp, types.uintp, types.intp, types.uintp, types.intp)

    def codegen(context, builder, signature, args):
        height, a_addr, a_step, panel_addr, count, out_addr, out_step = args
        word, byte = ir.IntType(32), ir.IntType(8)
        lanes = ir.VectorType(word, LANES)
        quads = ir.VectorType(byte, LANES * GROUP)
        parts = COLUMNS // LANES
        index = count.type
        dot = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(lanes, [lanes, quads, quads]), "llvm.x86.avx512.vpdpbusd.512"
        )
        a_ptr = builder.inttoptr(a_addr, byte.as_pointer())
        panel_ptr = builder.inttoptr(panel_addr, quads.as_pointer())
        zero = ir.Constant(lanes, [0] * LANES)

        def spread_at(t, r):
            at = builder.add(builder.mul(a_step, ir.Constant(index, r)), builder.mul(t, ir.Constant(index, GROUP)))
            codes = builder.load(builder.bitcast(builder.gep(a_ptr, [at]), word.as_pointer()), align=1)
            return builder.bitcast(splat(builder, codes, lanes), quads)

        def dot4(total, spread, column):
            return builder.call(dot, [total, spread, column])

        def emit(rows):
            acc = [[cgutils.alloca_once_value(builder, zero) for _ in range(parts)] for _ in range(rows)]
            outer_products(builder, count, acc, panel_vectors(builder, panel_ptr, parts, 1), spread_at, dot4)
            store_rows(builder, out_addr, out_step, [[builder.load(v) for v in row] for row in acc])

        by_rows(builder, height, ROWS, emit)
        return context.get_dummy_value()

    return sig, codegen
