"""Squared hinge (L2-SVM) loss, used by BinaryConnect and BNN."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SquaredHingeLoss(nn.Module):
    """L = mean over samples of sum over classes of max(0, 1 - t_k y_k)^2, t = +1 for the true class, -1 else.

    Tang 2013 (arXiv 1306.0239), as used by BinaryConnect (arXiv 1511.00363) and BNN.
    ``target`` holds class indices (B,); ``reduction`` is ``mean``, ``sum`` or ``none`` (per sample).
    """

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction={reduction!r} must be 'mean', 'sum' or 'none'")
        self.reduction = reduction

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if output.dim() != 2 or target.shape != output.shape[:1]:
            raise ValueError(
                f"expected scores (B, classes) and class indices (B,), got {tuple(output.shape)} "
                f"and {tuple(target.shape)}"
            )
        signs = F.one_hot(target, output.shape[1]).to(output.dtype) * 2 - 1
        per_sample = F.relu(1 - signs * output).pow(2).sum(dim=1)
        if self.reduction == "none":
            return per_sample
        return per_sample.sum() if self.reduction == "sum" else per_sample.mean()
