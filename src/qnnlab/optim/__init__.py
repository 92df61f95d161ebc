"""Optimizers and update rules: SGD, Adam, shift-based AdaMax, Bop; latent clipping; per-layer rates."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from qnnlab.optim.bop import Bop
from qnnlab.optim.rules import add_latent_clipping, binary_weights, glorot_scale, quantized_weights
from qnnlab.optim.shift_adamax import ShiftAdaMax

OPTIMIZERS = ("sgd", "adam", "shift_adamax", "bop")
SCHEDULES = ("constant", "cosine", "exponential")


def build_optimizer(
    model: nn.Module,
    name: str,
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    lr_scale: str = "none",
    clip_latent: float | None = None,
    bop_gamma: float = 1e-4,
    bop_threshold: float = 1e-8,
) -> torch.optim.Optimizer:
    """The optimizer of a recipe, with its update rules attached as hooks.

    lr_scale=glorot gives each quantized weight its own group with lr * glorot_scale (BinaryConnect).
    clip_latent clips the latent weights of binary/ternary quantizers after every step.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; use one of {', '.join(OPTIMIZERS)}")
    if lr_scale not in ("none", "glorot"):
        raise ValueError(f"lr_scale={lr_scale!r}; use none or glorot")
    binary = binary_weights(model)
    special = {id(p) for p in binary} if name == "bop" else set()
    if lr_scale == "glorot":
        special |= {id(p) for _, _, p, _ in quantized_weights(model)}
    groups: list[dict[str, Any]] = [{"params": [p for p in model.parameters() if id(p) not in special]}]
    if name == "bop":
        groups.append({"params": binary, "binary": True})
    elif lr_scale == "glorot":
        groups += [{"params": [p], "lr": lr * glorot_scale(p)} for _, _, p, _ in quantized_weights(model)]
    groups = [g for g in groups if g["params"]]
    if name == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    elif name == "adam":
        optimizer = torch.optim.Adam(groups, lr=lr, betas=betas, weight_decay=weight_decay)
    elif name == "shift_adamax":
        optimizer = ShiftAdaMax(groups, lr=lr, betas=betas, weight_decay=weight_decay)
    else:
        optimizer = Bop(groups, gamma=bop_gamma, threshold=bop_threshold, lr=lr, betas=betas)
    if clip_latent and name != "bop" and binary:
        add_latent_clipping(optimizer, binary, clip_latent)
    return optimizer


def build_schedule(
    optimizer: torch.optim.Optimizer, kind: str, total_steps: int, steps_per_epoch: int, final_fraction: float = 0.0
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step learning-rate factor: constant; cosine from 1 to ``final_fraction``; exponential
    decay per epoch reaching ``final_fraction`` at the end (BinaryConnect's LR_start -> LR_fin)."""
    if kind not in SCHEDULES:
        raise ValueError(f"unknown schedule {kind!r}; use one of {', '.join(SCHEDULES)}")
    total = max(1, total_steps)

    def factor(step: int) -> float:
        if kind == "cosine":
            return final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
        if kind == "exponential":
            epochs = max(1, total // max(1, steps_per_epoch))
            return max(final_fraction, 1e-12) ** ((step // max(1, steps_per_epoch)) / epochs)
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


__all__ = ["Bop", "ShiftAdaMax", "build_optimizer", "build_schedule"]
