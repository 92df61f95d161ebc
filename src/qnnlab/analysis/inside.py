"""What a trained network holds: each layer's latent weights and the activations its
input quantizer receives, as histograms, plus the first layer's weights of a few units.

BinaryConnect (Courbariaux et al. 2015, figure 2) shows first-layer filters to argue that binary
weights stop features co-adapting; a latent weight histogram shows how many weights sit at the
clipping bound, and an activation histogram how many inputs fall outside [-1, 1], where the
clipped straight-through estimator (BNN, Hubara et al. 2016) passes no gradient. The record is a
small JSON file (``inside.json`` in a run folder) so reports draw these without a checkpoint.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from qnnlab.nn import QuantizedModule
from qnnlab.storage import atomic_write

FLOAT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)  # layers of float models, drawn beside quantized ones

INSIDE = "inside.json"


def histogram(values: torch.Tensor, bins: int = 60) -> dict[str, Any]:
    """Counts over ``bins`` equal bins between the smallest and largest value, with the mean, the
    standard deviation and the share of values outside [-1, 1]."""
    values = values.detach().float().flatten()
    values = values[torch.isfinite(values)]
    if values.numel() == 0:
        return {"count": 0}
    low, high = float(values.min()), float(values.max())
    if high <= low:
        high = low + 1e-6
    counts = torch.histc(values, bins=bins, min=low, max=high)
    return {
        "count": int(values.numel()),
        "low": _round(low),
        "high": _round(high),
        "counts": [int(c) for c in counts],
        "mean": _round(float(values.mean())),
        "std": _round(float(values.std())) if values.numel() > 1 else 0.0,
        "outside_unit": _round(float((values.abs() > 1).float().mean())),
    }


def _round(value: float) -> float:
    return float(f"{value:.5g}") if math.isfinite(value) else value


@torch.no_grad()
def inside(model: nn.Module, inputs: torch.Tensor, units: int = 8, bins: int = 60) -> dict[str, Any]:
    """The record of ``model`` (in evaluation mode) on ``inputs``: one entry per quantized layer
    (and per float Linear or Conv layer) with its latent weight histogram and the histogram of what
    each forward activation quantizer (a float layer: the layer) receives, and the weights of the
    first ``units`` units of the first layer."""
    received: dict[tuple[str, str], list[torch.Tensor]] = {}
    hooks = []
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, (QuantizedModule, *FLOAT_LAYERS))]
    for name, module in layers:
        for role, watched in _activation_sources(module).items():
            key = (name, role)
            hooks.append(watched.register_forward_pre_hook(lambda _, args, key=key: _keep(received, key, args)))
    was_training = model.training
    model.eval()
    try:
        model(inputs)
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    entries = []
    for name, module in layers:
        quantizers = _weight_quantizers(module)
        entries.append(
            {
                "layer": name,
                "kind": type(module).__name__,
                "weights": {
                    p: {
                        "quantizer": str(q),
                        "shape": list(getattr(module, p).shape),
                        **histogram(getattr(module, p), bins),
                    }
                    for p, q in quantizers.items()
                },
                "activations": {
                    role: {"quantizer": _activation_quantizer(module, role), **histogram(torch.cat(found), bins)}
                    for (layer, role), found in received.items()
                    if layer == name
                },
            }
        )
    return {"samples": len(inputs), "layers": entries, "first_layer": _first_units(layers, units)}


def _activation_sources(module: nn.Module) -> dict[str, nn.Module]:
    """The module whose input is each watched activation: a quantized layer's forward activation
    quantizers (input, recurrent state), a float layer itself."""
    if not isinstance(module, QuantizedModule):
        return {"input": module}
    return {
        role: q
        for role, q in module.activation_quantizers().items()
        if role.startswith(("input", "state")) and isinstance(q, nn.Module)
    }


def _weight_quantizers(module: nn.Module) -> dict[str, Any]:
    if isinstance(module, QuantizedModule):
        return module.weight_quantizers_by_name()
    return {"weight": "float"}


def _activation_quantizer(module: nn.Module, role: str) -> str:
    return str(module.activation_quantizers()[role]) if isinstance(module, QuantizedModule) else "float"


def _keep(received: dict, key: tuple[str, str], args: tuple) -> None:
    if args and isinstance(args[0], torch.Tensor):
        received.setdefault(key, []).append(args[0].detach().flatten().cpu())


def _first_units(layers: list[tuple[str, nn.Module]], units: int) -> dict[str, Any] | None:
    """The first layer's weights of ``units`` units, each as the image it reads (a fully connected
    layer on pixels) or as its filters (a convolution), rounded to 4 digits."""
    if not layers:
        return None
    name, module = layers[0]
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() not in (2, 4):
        return None
    shown = weight.detach().float()[:units].cpu()
    return {
        "layer": name,
        "shape": list(shown.shape[1:]),
        "units": [[round(float(v), 4) for v in u.flatten()] for u in shown],
    }


def inside_of_run(model: nn.Module, data: Any, samples: int = 1000) -> dict[str, Any] | None:
    """The record of a trained image classifier on its first ``samples`` test images (None for
    other tasks, whose inputs are token streams)."""
    from qnnlab.data import ImageData
    from qnnlab.data.batches import to_unit_range

    if not isinstance(data, ImageData) or len(data.test_y) == 0:
        return None
    device = next(model.parameters()).device
    return inside(model, to_unit_range(data.test_x[:samples]).to(device))


def write_inside(file: Path, record: dict[str, Any]) -> None:
    atomic_write(file, lambda p: p.write_text(json.dumps(record) + "\n"))
