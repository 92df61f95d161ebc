"""Configurations that cannot learn, caught on the first batch before any epoch is spent.

A quantizer whose output is one value over a whole tensor (``sign`` after a ReLU makes every input
+1; ``int:bits=2`` rounds every small initial weight to 0), or a quantized layer whose weights get
no gradient at all, trains to chance without a word. ``check`` runs one forward and backward pass
of a copy of the model on the first batch, leaving the model and the random state untouched, and
names each such layer, its quantizer and the likely fix.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from qnnlab import quant
from qnnlab.nn import QuantizedModule


class DegenerateQuantization(ValueError):
    """The run would train a network whose quantized tensors carry no information."""


def _constant(t: torch.Tensor) -> bool:
    return t.numel() > 1 and bool((t == t.flatten()[0]).all())


def problems(model: nn.Module, task: Any, batch: tuple[torch.Tensor, torch.Tensor]) -> list[str]:
    """What is degenerate in ``model`` on ``batch``, one sentence per layer and quantizer."""
    probe = copy.deepcopy(model)
    probe.train()
    found: list[str] = []
    inputs: dict[str, torch.Tensor] = {}
    handles = []
    for name, module in probe.named_modules():
        if isinstance(module, QuantizedModule):
            handles.append(
                module.register_forward_pre_hook(lambda m, args, name=name: inputs.setdefault(name, args[0]))
            )
    if not handles:
        return []
    x, y = batch
    with torch.random.fork_rng(devices=[]):
        try:
            per_sample, _, _ = task.forward(probe, x, y, None)
            (per_sample.mean() + quant.score_function_loss(probe, per_sample)).backward()
        finally:
            for handle in handles:
                handle.remove()
        for name, module in probe.named_modules():
            if not isinstance(module, QuantizedModule):
                continue
            found += _layer_problems(name, module, inputs.get(name))
    return found


def _layer_problems(name: str, module: QuantizedModule, x: torch.Tensor | None) -> list[str]:
    found = []
    quantizers = module.activation_quantizers()
    weights = module.weight_quantizers_by_name()
    with torch.no_grad():
        for param, q in weights.items():
            if q.meta.kind == "float" or q.meta.stochastic:
                continue
            value = q(getattr(module, param))
            if _constant(value):
                found.append(
                    f"layer {name}: weight quantizer {q} maps every initial weight of {param} to {_first(value)} "
                    "(the weights are small for its grid): use a scaled quantizer (dorefa_w, xnor_weight, "
                    "ternary) or a grid that fits them"
                )
        q = quantizers.get("input")
        if x is not None and q is not None and q.meta.kind != "float" and not q.meta.stochastic:
            value = q(x.detach())
            if _constant(value):
                span = f"[{float(x.min()):.3g}, {float(x.max()):.3g}]"
                found.append(
                    f"layer {name}: input quantizer {q} makes every input {_first(value)} (its inputs lie in {span}): "
                    "with sign inputs use activation: identity or hardtanh (a ReLU leaves nothing negative to "
                    "binarize), or a quantizer whose range fits the inputs"
                )
    for param, q in weights.items():
        grad = getattr(module, param).grad
        if q.meta.kind != "float" and (grad is None or not bool(grad.abs().sum() > 0)):
            found.append(
                f"layer {name}: {param} gets no gradient on the first batch (estimator {q.estimator.name} of {q} "
                "passes none here, or a layer below blocks it): try another estimator (@ste) or check the "
                "layer's input range"
            )
    return found


def _first(value: torch.Tensor) -> str:
    return f"{float(value.flatten()[0]) + 0.0:g}"  # + 0.0: no "-0"


def check(model: nn.Module, task: Any, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    found = problems(model, task, batch)
    if found:
        raise DegenerateQuantization(
            "this configuration cannot learn: " + "; ".join(found) + ". Pass --allow-degenerate (or set "
            "allow_degenerate: true) to train it anyway."
        )
