"""Operand kinds from quantizer metadata, and the kind of a multiply-accumulate of two operands.

Operand kinds: ``fp32``, ``fp16``, ``binary`` (+-1), ``ternary`` (-1, 0, +1), ``pow2`` (sign and
exponent), ``intK`` (a K-bit grid: uniform, fixed point, or a K-bit table of levels).

MAC kinds: ``fp32`` / ``fp16`` (a float multiply and add), ``intK`` (a K-bit integer multiply and
a wide accumulate), ``binary`` (XNOR + popcount), ``add_X`` (one operand is +-1 or 0, so the
product is the other operand or its negation: an accumulation of X, as BinaryConnect claims),
``shift_X`` (one operand is a power of two: a shift of X, then an accumulation).
"""

from __future__ import annotations

from qnnlab.quant import QuantMeta


def operand_kind(meta: QuantMeta) -> str:
    if meta.kind == "float":
        return "fp32"
    if meta.kind == "half":
        return "fp16"
    if meta.kind in ("binary", "ternary", "pow2"):
        return meta.kind
    return f"int{meta.bits}"


def gradient_kind(meta: QuantMeta) -> str:
    """Kind of the errors flowing back through a layer whose grad quantizer has ``meta``."""
    if not meta.backward:
        return "fp32"
    return "pow2" if meta.kind == "pow2" else f"int{meta.bits}"


def _as_value(kind: str) -> str:
    """The arithmetic kind an operand takes part in additions with."""
    return {"ternary": "int2", "pow2": "fp32"}.get(kind, kind)


def mac_kind(a: str, b: str) -> str:
    if a == "binary" and b == "binary":
        return "binary"
    if {a, b} <= {"binary", "ternary"}:
        return "int2"
    for sparse, other in ((a, b), (b, a)):
        if sparse in ("binary", "ternary"):
            return f"add_{_as_value(other)}"
    for shift, other in ((a, b), (b, a)):
        if shift == "pow2":
            return f"shift_{_as_value(other)}"
    for float_kind in ("fp32", "fp16"):
        if float_kind in (a, b):
            return float_kind
    return f"int{max(int(a[3:]), int(b[3:]))}"
