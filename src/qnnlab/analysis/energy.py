"""Energy per operation: Horowitz, "Computing's energy problem", ISSCC 2014 (45 nm, 0.9 V).

Table values (pJ): integer add 8/32-bit 0.03/0.1, integer multiply 8/32-bit 0.2/3.1, float16
add/multiply 0.4/1.1, float32 add/multiply 0.9/3.7; 64-bit SRAM (8 KB cache) read 10 pJ and DRAM
access 1.3-2.6 nJ per 64 bits, taken here as 10/64 and 1300/64 pJ per bit.

Widths between are priced by the growth the table shows: a multiplier by bits squared
(0.2 (b/8)^2 pJ, which gives 3.2 pJ at 32 bits against the table's 3.1), an adder or accumulator
linearly (0.03 b/8 pJ up to 8 bits, then linear between the 8- and 32-bit entries). Table widths
use the table's values.

Operations the table does not list are priced by stated assumptions: a comparison, shift or
XNOR of b bits as a b-bit add; a binary MAC (XNOR + popcount) as two 1-bit adds (the XNOR and its
share of the popcount adder tree) plus one accumulator add per 64-bit word; a float division or
square root as 4 float multiplies, an exponential as 10; a random number as three 32-bit integer
operations (xorshift).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

SOURCE = "Horowitz, Computing's energy problem, ISSCC 2014 (45 nm, 0.9 V)"
WORD_BITS = 64

DEFAULTS = {
    "int_add_8": 0.03,
    "int_add_32": 0.1,
    "int_mult_8": 0.2,
    "int_mult_32": 3.1,
    "fp16_add": 0.4,
    "fp16_mult": 1.1,
    "fp32_add": 0.9,
    "fp32_mult": 3.7,
    "sram_bit": 10.0 / 64,
    "dram_bit": 1300.0 / 64,
}


@dataclasses.dataclass
class EnergyTable:
    """pJ per operation; ``price(op, width)`` for op in add, mul, cmp, shift, div, sqrt, exp, rng, and
    ``mac(kind)`` for the MAC kinds of ``qnnlab.analysis.kinds``."""

    values: dict[str, float] = dataclasses.field(default_factory=lambda: dict(DEFAULTS))
    source: str = SOURCE

    @classmethod
    def from_file(cls, path: str | Path) -> EnergyTable:
        """Lines of ``name value`` (pJ), ``#`` comments; names as in DEFAULTS; unlisted names keep defaults."""
        values = dict(DEFAULTS)
        if not Path(path).is_file():
            raise ValueError(f"energy table {path} does not exist; it is a text file of 'name pJ' lines")
        text = Path(path).read_text()
        seen: dict[str, int] = {}
        for number, line in enumerate(text.splitlines(), 1):
            content = line.split("#", 1)[0].strip()
            if not content:
                continue
            match = re.fullmatch(r"([a-z0-9_]+)\s*[:=]?\s*([0-9.eE+-]+)", content)
            if not match:
                raise ValueError(f"{path}, line {number}: expected 'name value_pJ', got {line.strip()!r}")
            name, text_value = match.groups()
            if name not in DEFAULTS:
                raise ValueError(f"{path}, line {number}: unknown entry {name!r}; known: {', '.join(DEFAULTS)}")
            try:
                value = float(text_value)
            except ValueError:
                raise ValueError(f"{path}, line {number}: {text_value!r} is not a number") from None
            if not 0 <= value < float("inf"):
                raise ValueError(f"{path}, line {number}: energy {value} must be >= 0 and finite")
            if name in seen:
                raise ValueError(f"{path}, line {number}: {name} was already given on line {seen[name]}")
            seen[name] = number
            values[name] = value
        return cls(values, f"{path} (defaults: {SOURCE})")

    def int_add(self, bits: float) -> float:
        v = self.values
        if bits <= 8:
            return v["int_add_8"] * bits / 8
        if bits == 32:
            return v["int_add_32"]
        return v["int_add_8"] + (v["int_add_32"] - v["int_add_8"]) * (bits - 8) / 24

    def int_mult(self, bits: float) -> float:
        v = self.values
        if bits == 8:
            return v["int_mult_8"]
        if bits == 32:
            return v["int_mult_32"]
        return v["int_mult_8"] * (bits / 8) ** 2

    def price(self, op: str, width: str) -> float:
        """pJ of one ``op`` on ``width`` operands ("fp32", "fp16", "int8", "binary", ...)."""
        v = self.values
        if width in ("fp32", "fp16"):
            add, mult = v[f"{width}_add"], v[f"{width}_mult"]
            return {
                "add": add,
                "cmp": add,
                "shift": self.int_add(8),
                "mul": mult,
                "div": 4 * mult,
                "sqrt": 4 * mult,
                "exp": 10 * mult,
                "rng": 3 * self.int_add(32),
            }[op]
        bits = bit_width(width)
        return {
            "add": self.int_add(bits),
            "cmp": self.int_add(bits),
            "shift": self.int_add(bits),
            "mul": self.int_mult(bits),
            "div": 4 * self.int_mult(bits),
            "sqrt": 4 * self.int_mult(bits),
            "exp": 10 * self.int_mult(bits),
            "rng": 3 * self.int_add(32),
        }[op]

    def mac(self, kind: str, accumulator_bits: int = 32) -> float:
        """pJ of one multiply-accumulate of ``kind`` (see ``qnnlab.analysis.kinds.mac_kind``)."""
        v = self.values
        if kind in ("fp32", "fp16"):
            return v[f"{kind}_mult"] + v[f"{kind}_add"]
        if kind == "binary":
            return 2 * self.int_add(1) + self.int_add(accumulator_bits) / WORD_BITS
        if kind.startswith("add_"):  # one operand is +-1 or 0: only the accumulation remains
            return self.price("add", kind[4:])
        if kind.startswith("shift_"):  # one operand is a power of two: shift, then accumulate
            return self.int_add(8) + self.price("add", kind[6:])
        bits = bit_width(kind)
        return self.int_mult(bits) + self.int_add(accumulator_bits)

    def memory_bit(self, level: str) -> float:
        return self.values[f"{level}_bit"]


def bit_width(kind: str) -> int:
    """Bits of an operand kind: fp32 32, fp16 16, binary 1, intK K."""
    if kind == "binary":
        return 1
    match = re.fullmatch(r"(?:int|fp)(\d+)", kind)
    if not match:
        raise ValueError(f"unknown operand kind {kind!r}")
    return int(match.group(1))
