"""Spec strings: the text form that names a quantizer and its gradient estimator.

Grammar::

    spec      := piece ["@" piece]          quantizer, then optional estimator
    piece     := NAME [":" args]
    args      := arg ("," arg)*
    arg       := VALUE | KEY "=" VALUE      positional arguments come first

Examples: ``"sign"``, ``"sign@approxsign"``, ``"dorefa:2"``, ``"int:bits=4,stochastic=1"``,
``"stochastic_sign@gumbel:tau=0.5,hard=1"``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

_RESERVED = set(":,=@ ")


@dataclasses.dataclass(frozen=True)
class Param:
    """One declared argument of a quantizer or estimator.

    ``kind`` is ``int``, ``float``, ``bool`` or ``str``; ``check`` returns an error text for a
    value that is out of range (``None`` when valid); ``choices`` restricts a string.
    """

    name: str
    kind: type
    default: Any
    doc: str = ""
    check: Callable[[Any], str | None] | None = None
    choices: Sequence[str] | None = None

    def convert(self, owner: str, text: Any) -> Any:
        value = _coerce(owner, self, text)
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{owner}: {self.name}={value!r} is not one of {', '.join(self.choices)}")
        if self.check is not None:
            problem = self.check(value)
            if problem:
                raise ValueError(f"{owner}: {self.name}={value!r} {problem}")
        return value

    def format(self, value: Any) -> str:
        if self.kind is bool:
            return "1" if value else "0"
        if self.kind is float:
            return repr(float(value))
        return str(value)


def _coerce(owner: str, param: Param, text: Any) -> Any:
    if not isinstance(text, str):
        text = param.format(text) if param.kind is not str else str(text)
    try:
        if param.kind is bool:
            lowered = text.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if param.kind is int:
            return int(text)
        if param.kind is float:
            value = float(text)
            if not math.isfinite(value):
                raise ValueError
            return value
        if not text or _RESERVED & set(text):
            raise ValueError
        return text
    except ValueError:
        kind = {bool: "0 or 1", int: "an integer", float: "a finite number", str: "a word"}[param.kind]
        raise ValueError(f"{owner}: {param.name}={text!r} must be {kind}") from None


def in_range(lo: float, hi: float) -> Callable[[Any], str | None]:
    """A ``Param.check`` accepting ``lo <= value <= hi``."""

    def check(value: Any) -> str | None:
        return None if lo <= value <= hi else f"is out of range [{lo}, {hi}]"

    return check


def positive(value: Any) -> str | None:
    return None if value > 0 else "must be > 0"


@dataclasses.dataclass(frozen=True)
class Piece:
    """A parsed ``NAME[:args]``: positional and keyword argument texts, not yet typed."""

    name: str
    positional: tuple[str, ...] = ()
    keywords: tuple[tuple[str, str], ...] = ()


def split_spec(spec: str) -> tuple[Piece, Piece | None]:
    """Split ``"quantizer[:args][@estimator[:args]]"`` into its two pieces (syntax only)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"a quantizer spec must be a non-empty string like 'sign' or 'dorefa:2', got {spec!r}")
    parts = spec.strip().split("@")
    if len(parts) > 2:
        raise ValueError(f"spec {spec!r} has more than one '@'; the form is QUANTIZER[:ARGS][@ESTIMATOR[:ARGS]]")
    quantizer = parse_piece(spec, parts[0])
    estimator = parse_piece(spec, parts[1]) if len(parts) == 2 else None
    return quantizer, estimator


def parse_piece(spec: str, text: str) -> Piece:
    name, _, arg_text = text.partition(":")
    name = name.strip()
    if not name.replace("_", "").isalnum():
        raise ValueError(f"spec {spec!r}: {name!r} is not a name; the form is NAME[:ARG,KEY=VALUE,...]")
    positional: list[str] = []
    keywords: list[tuple[str, str]] = []
    if arg_text.strip() or ":" in text:
        for arg in arg_text.split(","):
            arg = arg.strip()
            if not arg:
                raise ValueError(f"spec {spec!r}: empty argument in {text!r}")
            key, eq, value = arg.partition("=")
            if eq:
                keywords.append((key.strip(), value.strip()))
            elif keywords:
                raise ValueError(f"spec {spec!r}: positional argument {arg!r} after a KEY=VALUE one")
            else:
                positional.append(arg)
    return Piece(name, tuple(positional), tuple(keywords))


def bind(owner: str, params: Sequence[Param], piece: Piece) -> dict[str, Any]:
    """Turn a piece's argument texts into typed values for ``params``, defaults filled in."""
    if len(piece.positional) > len(params):
        accepted = ", ".join(p.name for p in params) or "no arguments"
        raise ValueError(f"{owner}: too many arguments {list(piece.positional)}; it takes {accepted}")
    given: dict[str, Any] = dict(zip((p.name for p in params), piece.positional))
    known = {p.name for p in params}
    for key, value in piece.keywords:
        if key not in known:
            accepted = ", ".join(sorted(known)) or "no arguments"
            raise ValueError(f"{owner}: unknown argument {key!r}; accepted: {accepted}")
        if key in given:
            raise ValueError(f"{owner}: argument {key!r} given twice")
        given[key] = value
    return {p.name: p.convert(owner, given[p.name]) if p.name in given else p.default for p in params}


def format_piece(name: str, params: Sequence[Param], values: dict[str, Any]) -> str:
    """The canonical text of a piece: only arguments that differ from their defaults, as KEY=VALUE."""
    args = [f"{p.name}={p.format(values[p.name])}" for p in params if values[p.name] != p.default]
    return name + (":" + ",".join(args) if args else "")
