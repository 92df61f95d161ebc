"""Normalisation and activation choices shared by the model builders."""

from __future__ import annotations

from torch import nn

from qnnlab.nn import RPReLU, ShiftBatchNorm1d, ShiftBatchNorm2d

NORMS = ("bn", "shift", "none")
ACTIVATIONS = ("relu", "hardtanh", "identity", "rprelu")


def norm(kind: str, features: int, dims: int) -> nn.Module:
    """Batch norm (``bn``), the BNN paper's shift-based batch norm (``shift``) or nothing."""
    if kind == "bn":
        return nn.BatchNorm1d(features) if dims == 1 else nn.BatchNorm2d(features)
    if kind == "shift":
        return ShiftBatchNorm1d(features) if dims == 1 else ShiftBatchNorm2d(features)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm={kind!r}; use one of {', '.join(NORMS)}")


def activation(kind: str, channels: int) -> nn.Module:
    """``identity`` serves binary nets, whose sign is the next layer's input quantizer; ``rprelu``
    gives them learned shifts and slopes per channel before that sign (ReActNet)."""
    if kind == "rprelu":
        return RPReLU(channels)
    if kind == "relu":
        return nn.ReLU()
    if kind == "hardtanh":
        return nn.Hardtanh()
    if kind == "identity":
        return nn.Identity()
    raise ValueError(f"activation={kind!r}; use one of {', '.join(ACTIVATIONS)}")
