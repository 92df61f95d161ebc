"""Name -> class tables for quantizers and estimators, and ``get(spec)``."""

from __future__ import annotations

from typing import Any, TypeVar

from torch import nn

from qnnlab.quant.spec import bind, parse_piece, split_spec

# name -> Quantizer / Estimator subclass (qnnlab.quant.base), filled by the register decorators
QUANTIZERS: dict[str, type] = {}
ESTIMATORS: dict[str, type] = {}
# alias -> (quantizer name, estimator name): short names used in the papers and other libraries.
ALIASES: dict[str, tuple[str, str]] = {
    "ste_sign": ("sign", "clipped"),
    "approx_sign": ("sign", "approxsign"),
    "swish_sign": ("sign", "swishsign"),
    "bwn": ("xnor_weight", "clipped"),
}

T = TypeVar("T")


def register_quantizer(cls: T) -> T:
    _register(QUANTIZERS, cls)
    return cls


def register_estimator(cls: T) -> T:
    _register(ESTIMATORS, cls)
    return cls


def _register(table: dict, cls: type) -> None:
    name = cls.name
    if name in table or name in ALIASES:
        raise ValueError(f"name {name!r} is registered twice")
    table[name] = cls


def available() -> list[str]:
    """Every name ``get`` accepts before the first ``:`` or ``@`` (quantizers and aliases)."""
    return sorted([*QUANTIZERS, *ALIASES])


def available_estimators() -> list[str]:
    return sorted(ESTIMATORS)


def get(spec: Any) -> Any:
    """Build a quantizer from a spec string (``"sign@approxsign"``, ``"dorefa:2"``).

    ``None`` gives the no-op ``float`` quantizer; a quantizer instance is returned as it is.
    """
    if spec is None:
        spec = "float"
    if not isinstance(spec, str):
        if isinstance(spec, nn.Module) and hasattr(spec, "meta"):
            return spec
        raise ValueError(f"a quantizer is a spec string like 'sign' or 'dorefa:bits=2', got {spec!r}")
    piece, estimator_piece = split_spec(spec)
    name, estimator_name = piece.name, None
    if name in ALIASES:
        name, estimator_name = ALIASES[name]
    if name not in QUANTIZERS:
        raise ValueError(f"unknown quantizer {piece.name!r} in spec {spec!r}; known: {', '.join(available())}")
    cls = QUANTIZERS[name]
    values = bind(name, cls.params, piece)
    estimator: Any = estimator_name
    if estimator_piece is not None:
        estimator = _build_estimator(estimator_piece.name, estimator_piece, spec)
    return cls(estimator=estimator, **values)


def make_estimator(spec: Any) -> Any:
    """An estimator from its spec string; an estimator object is returned as it is."""
    if isinstance(spec, nn.Module) and hasattr(spec, "derivative"):
        return spec
    if not isinstance(spec, str) or "@" in spec:
        raise ValueError(f"an estimator spec is NAME[:ARGS] like 'clipped' or 'gumbel:tau=0.5', got {spec!r}")
    piece = parse_piece(spec, spec)
    return _build_estimator(piece.name, piece, spec)


def _build_estimator(name: str, piece: Any, spec: str) -> Any:
    if name not in ESTIMATORS:
        raise ValueError(f"unknown estimator {name!r} in spec {spec!r}; known: {', '.join(available_estimators())}")
    cls = ESTIMATORS[name]
    return cls(**bind(name, cls.params, piece))
