"""Turn an ordinary float model into a quantized one from per-layer rules.

Rules are an ordered list of dicts; each says which layers it matches and what to set, and later
rules override earlier ones key by key::

    [
        {"match": "*", "weight": "sign", "input": "sign"},
        {"match": "first", "input": "uniform:bits=8"},      # 8-bit pixels into layer 1
        {"match": "last", "keep": True},                    # last layer stays float
    ]

``match``: ``*`` (every layer), ``first`` / ``last`` (in registration order), a layer type
(``Linear``, ``Conv2d``, ``LSTM``, ``GRU``), or a glob on the qualified module name
(``features.*``). Keys: ``weight``, ``input``, ``grad`` and, for LSTM/GRU, ``state`` (quantizer
specs), and ``keep`` (leave the layer as it is).
"""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Iterable, Mapping
from typing import Any

from torch import nn

from qnnlab.nn.conv import QuantConv2d
from qnnlab.nn.linear import DropConnectLinear, QuantLinear
from qnnlab.nn.rnn import QuantGRU, QuantLSTM

RULE_KEYS = {"match", "weight", "input", "grad", "update_input", "state", "keep"}
LAYER_TYPES = {"Linear": nn.Linear, "Conv2d": nn.Conv2d, "LSTM": (nn.LSTM, QuantLSTM), "GRU": (nn.GRU, QuantGRU)}
CONVERTIBLE = (nn.Linear, nn.Conv2d, nn.LSTM, nn.GRU, QuantLSTM, QuantGRU)


def quantize_model(model: nn.Module, rules: Mapping[str, Any] | Iterable[Mapping[str, Any]]) -> nn.Module:
    """A copy of ``model`` whose Linear / Conv2d / LSTM / GRU layers are quantized per ``rules``.

    Weights are copied, so a trained float model becomes the starting point of its QNN.
    """
    rules = [dict(rules)] if isinstance(rules, Mapping) else [dict(r) for r in rules]
    _check_rules(rules)
    model = copy.deepcopy(model)
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, CONVERTIBLE)]
    if not layers:
        raise ValueError("the model has no Linear, Conv2d, LSTM or GRU layer to quantize")
    for rule in rules:
        pattern = rule.get("match", "*")
        if not any(_matches(pattern, i, name, m, len(layers)) for i, (name, m) in enumerate(layers)):
            names = ", ".join(name for name, _ in layers)
            raise ValueError(f"rule match {pattern!r} matches no layer; the layers are: {names}")
    for index, (name, module) in enumerate(layers):
        settings: dict[str, Any] = {}
        for rule in rules:
            if _matches(rule.get("match", "*"), index, name, module, len(layers)):
                settings.update({k: v for k, v in rule.items() if k != "match"})
        if not settings or settings.pop("keep", False):
            continue
        _replace(model, name, _quantized_copy(name, module, settings))
    return model


def _check_rules(rules: list[dict[str, Any]]) -> None:
    for rule in rules:
        unknown = set(rule) - RULE_KEYS
        if unknown:
            raise ValueError(f"unknown rule key(s) {sorted(unknown)}; accepted: {', '.join(sorted(RULE_KEYS))}")
        if not isinstance(rule.get("match", "*"), str):
            raise ValueError(f"rule {rule}: match must be text (*, first, last, a layer type or a name pattern)")
        if not isinstance(rule.get("keep", False), bool):
            raise ValueError(f"rule {rule}: keep must be true or false, not {rule['keep']!r}")
        for key in ("weight", "input", "grad", "update_input", "state"):
            if rule.get(key) is not None and not isinstance(rule[key], str):
                raise ValueError(f"rule {rule}: {key} must be a quantizer spec such as 'sign', not {rule[key]!r}")


def _matches(pattern: str, index: int, name: str, module: nn.Module, count: int) -> bool:
    if pattern == "*":
        return True
    if pattern == "first":
        return index == 0
    if pattern == "last":
        return index == count - 1
    if pattern in LAYER_TYPES:
        return isinstance(module, LAYER_TYPES[pattern])
    return fnmatch.fnmatchcase(name, pattern)


def _quantized_copy(name: str, m: nn.Module, settings: dict[str, Any]) -> nn.Module:
    q = {f"{k}_quantizer": v for k, v in settings.items() if k in ("weight", "input", "grad", "update_input")}
    if isinstance(m, (nn.LSTM, nn.GRU, QuantLSTM, QuantGRU)):
        for key in ("grad", "update_input"):
            if key in settings:
                raise ValueError(f"layer {name}: {key} quantizers apply to Linear and Conv2d layers, not to RNNs")
        if getattr(m, "bidirectional", False) or getattr(m, "proj_size", 0):
            raise ValueError(f"layer {name}: bidirectional and projected RNNs are not supported")
        cls = QuantLSTM if isinstance(m, (nn.LSTM, QuantLSTM)) else QuantGRU
        new: nn.Module = cls(
            m.input_size,
            m.hidden_size,
            m.num_layers,
            m.bias,
            m.batch_first,
            m.dropout,
            state_quantizer=settings.get("state"),
            **q,
        )
    else:
        if "state" in settings:
            raise ValueError(f"layer {name}: 'state' quantizers apply to LSTM and GRU layers only")
        if isinstance(m, DropConnectLinear):
            new = DropConnectLinear(m.in_features, m.out_features, m.bias is not None, m.p, m.inference, **q)
        elif isinstance(m, nn.Linear):
            new = QuantLinear(m.in_features, m.out_features, m.bias is not None, **q)
        else:
            new = QuantConv2d(
                m.in_channels,
                m.out_channels,
                m.kernel_size,
                m.stride,
                m.padding,
                m.dilation,
                m.groups,
                m.bias is not None,
                m.padding_mode,
                **q,
            )
    reference = next(m.parameters())
    new.to(device=reference.device, dtype=reference.dtype)
    for pname, p in m.named_parameters(recurse=False):
        getattr(new, pname).data.copy_(p.data)
    new.train(m.training)
    return new


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
