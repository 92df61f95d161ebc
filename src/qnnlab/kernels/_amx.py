"""The 8-bit first layer on AMX tiles: unsigned pixel codes times +-1 weights held as int8, with
TDPBUSD, which adds a (16 x 64 u8) by (64 x 16 s8) product into a 16 x 16 int32 tile: 16,384
multiply-accumulates per instruction, against VPDPBUSD's 64 (``_int8_tiles``). AMX (Intel's
Advanced Matrix Extensions, Sapphire Rapids and later) is how oneDNN, under OpenVINO, runs int8:
where the CPU has it, the first layer takes it too.

``tile_products``: for up to two tiles of 16 rows of codes and two blocks of 16 weight columns,
the four products stay in tile registers (2 + 2 operands + 4 accumulators: the eight tiles) over
the chunks of 64 codes. The weights are the VNNI panels of ``_int8_tiles`` ((P, groups, 64, 4)
int8), read as tiles in place: a block of 16 columns is 64 bytes of each group's row, so a tile is
16 such rows 256 bytes apart. LLVM configures the tiles (LDTILECFG) from the shapes given to the
intrinsics; Linux hands a process the tile registers only on request (``available``).
"""

from __future__ import annotations

import ctypes
import functools
import platform

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

TILE_ROWS = 16
CHUNK = 64  # codes per tile row
BLOCKS = 2  # column blocks of 16 per call
ROW_TILES = 2  # row tiles of 16 per call, at most
FROM_BATCH = 4  # a tile does 16 rows' work at any height: below this, VPDPBUSD's 6-row tiles do less


class _TileType(ir.Type):
    """LLVM's ``x86_amx``, which llvmlite does not name."""

    def _to_string(self) -> str:
        return "x86_amx"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _TileType)

    def __hash__(self) -> int:
        return hash("x86_amx")


@functools.cache
def available() -> bool:
    """Whether numba compiles for this CPU (no NUMBA_CPU_NAME override), the CPU has AMX with int8
    products, and Linux grants this process the tile registers (arch_prctl ARCH_REQ_XCOMP_PERM for
    XTILEDATA; without the grant the first tile instruction kills the process)."""
    import llvmlite.binding as llvm
    from numba.core import config

    if config.CPU_NAME not in (None, "host") or platform.system() != "Linux" or platform.machine() != "x86_64":
        return False
    features = llvm.get_host_cpu_features()
    if not (features.get("amx-tile") and features.get("amx-int8")):
        return False
    arch_prctl, req_xcomp_perm, xtiledata = 158, 0x1023, 18
    return ctypes.CDLL(None, use_errno=True).syscall(arch_prctl, req_xcomp_perm, xtiledata) == 0


@intrinsic
def tile_products(typingctx, row_tiles, a_address, a_stride, b_address, chunks, out_address, out_stride):
    """out[16 r + i, 16 j + l] (int32, rows ``out_stride`` bytes apart) = sum over ``chunks`` chunks
    of 64 codes of a[16 r + i, 64 t + q] (uint8, rows ``a_stride`` bytes apart) times b's column
    16 j + l (the panel layout: group g's row of 64 columns x 4 codes 256 bytes long, a block of
    16 columns 64 bytes of it), for r < ``row_tiles`` (1 or 2) and j < 2."""
    sig = types.void(types.intp, types.uintp, types.intp, types.uintp, types.intp, types.uintp, types.intp)

    def codegen(context, builder, signature, args):
        tiles, a_addr, a_step, b_addr, count, out_addr, out_step = args
        tile, byte, wide, short = _TileType(), ir.IntType(8), ir.IntType(64), ir.IntType(16)
        pointer = byte.as_pointer()
        module, function = builder.module, builder.function

        def declare(name, result, arguments):
            return cgutils.get_or_insert_function(module, ir.FunctionType(result, arguments), name)

        load = declare("llvm.x86.tileloadd64.internal", tile, [short, short, pointer, wide])
        dot = declare("llvm.x86.tdpbusd.internal", tile, [short, short, short, tile, tile, tile])
        store = declare("llvm.x86.tilestored64.internal", ir.VoidType(), [short, short, pointer, wide, tile])
        zero = declare("llvm.x86.tilezero.internal", tile, [short, short])
        rows, width = ir.Constant(short, TILE_ROWS), ir.Constant(short, CHUNK)

        def n(value):
            return ir.Constant(wide, value)

        a_ptr, b_ptr, out_ptr = (builder.inttoptr(v, pointer) for v in (a_addr, b_addr, out_addr))
        panel_row = n(4 * 64)  # bytes of one group's row in the panel
        after = function.append_basic_block("tiles.after")
        for height in range(1, ROW_TILES + 1):
            body, other = function.append_basic_block("tiles.body"), function.append_basic_block("tiles.other")
            builder.cbranch(builder.icmp_signed("==", tiles, n(height)), body, other)
            builder.position_at_end(body)
            start = builder.block
            initial = [builder.call(zero, [rows, width]) for _ in range(height * BLOCKS)]
            loop, done = function.append_basic_block("tiles.loop"), function.append_basic_block("tiles.done")
            builder.branch(loop)
            builder.position_at_end(loop)
            t = builder.phi(wide)
            sums = [builder.phi(tile) for _ in initial]
            chunk_at = builder.mul(t, n(TILE_ROWS * 4 * 64))
            columns = [
                builder.call(load, [rows, width, builder.gep(b_ptr, [builder.add(chunk_at, n(64 * j))]), panel_row])
                for j in range(BLOCKS)
            ]
            codes = [
                builder.call(
                    load,
                    [
                        rows,
                        width,
                        builder.gep(a_ptr, [builder.add(builder.mul(n(16 * r), a_step), builder.mul(t, n(CHUNK)))]),
                        a_step,
                    ],
                )
                for r in range(height)
            ]
            updated = [
                builder.call(dot, [rows, width, width, sums[r * BLOCKS + j], codes[r], columns[j]])
                for r in range(height)
                for j in range(BLOCKS)
            ]
            following = builder.add(t, n(1))
            t.add_incoming(n(0), start)
            t.add_incoming(following, builder.block)
            for phi, first, last in zip(sums, initial, updated):
                phi.add_incoming(first, start)
                phi.add_incoming(last, builder.block)
            builder.cbranch(builder.icmp_signed("<", following, count), loop, done)
            builder.position_at_end(done)
            for r in range(height):
                for j in range(BLOCKS):
                    at = builder.add(builder.mul(n(16 * r), out_step), n(64 * j))
                    builder.call(store, [rows, width, builder.gep(out_ptr, [at]), out_step, updated[r * BLOCKS + j]])
            builder.branch(after)
            builder.position_at_end(other)
        builder.branch(after)
        builder.position_at_end(after)
        return context.get_dummy_value()

    return sig, codegen
