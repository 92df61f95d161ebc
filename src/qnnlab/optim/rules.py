"""Update rules around a standard optimizer: latent-weight clipping and per-layer learning rates."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from qnnlab.nn import QuantizedModule
from qnnlab.quant import Quantizer

CLIPPED_KINDS = ("binary", "ternary")


def quantized_weights(model: nn.Module) -> Iterator[tuple[nn.Module, str, nn.Parameter, Quantizer]]:
    """(layer, name, latent parameter, quantizer) for every weight a quantizer other than ``float`` reads."""
    for module in model.modules():
        if isinstance(module, QuantizedModule):
            for name, q in module.weight_quantizers_by_name().items():
                if q.meta.kind != "float":
                    yield module, name, getattr(module, name), q


def binary_weights(model: nn.Module) -> list[nn.Parameter]:
    """Latent weights behind binary or ternary quantizers: the ones clipping and Bop act on."""
    return [p for _, _, p, q in quantized_weights(model) if q.meta.kind in CLIPPED_KINDS]


def add_latent_clipping(optimizer: torch.optim.Optimizer, params: list[nn.Parameter], bound: float) -> None:
    """After every step, clip latent weights to [-bound, bound] (BinaryConnect, BNN): beyond the
    clip a latent weight cannot change its sign any more, so its growth only adds inertia."""
    if bound <= 0:
        raise ValueError(f"clip_latent={bound} must be > 0")

    def clip(*_: Any) -> None:
        with torch.no_grad():
            for p in params:
                p.clamp_(-bound, bound)

    optimizer.register_step_post_hook(clip)


def glorot_scale(p: nn.Parameter) -> float:
    """BinaryConnect's per-layer learning-rate factor 1 / sqrt(1.5 / (fan_in + fan_out)), the inverse
    of Glorot's uniform initialisation bound (Courbariaux et al. 2015, arXiv 1511.00363)."""
    fan_out = p.shape[0]
    fan_in = p[0].numel()
    return 1.0 / math.sqrt(1.5 / (fan_in + fan_out))


def add_latent_rounding(optimizer: torch.optim.Optimizer, params: list[nn.Parameter], spec: str) -> None:
    """After every step, round each latent weight with its own quantizer ``spec``: the parameter
    storage (update) precision of Courbariaux et al. 2014, separate from the propagation precision."""
    from qnnlab import quant

    quantizers = [quant.get(spec) for _ in params]

    def round_latent(*_: Any) -> None:
        with torch.no_grad():
            for p, q in zip(params, quantizers):
                p.copy_(q(p))

    optimizer.register_step_post_hook(round_latent)
