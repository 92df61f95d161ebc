"""Learnable shifts around the sign, as ReActNet adds them (Liu et al. 2020, arXiv 2003.03488)."""

from __future__ import annotations

import torch
from torch import nn


class RPReLU(nn.Module):
    """f(x) = PReLU(x - gamma) + zeta, one gamma, slope and zeta per channel (dim 1).

    Before a binary layer, sign(f(x)) thresholds x at a learned point per channel: zeta plays
    ReActNet's RSign (sign(x - alpha)) and gamma and the slope its RPReLU, so a binary net learns
    where to cut each channel instead of at 0 after batch norm. Starts as the identity for x >= 0
    (gamma = zeta = 0, slope 0.25 below)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(channels))
        self.zeta = nn.Parameter(torch.zeros(channels))
        self.prelu = nn.PReLU(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        view = (1, -1) + (1,) * (x.dim() - 2)
        return self.prelu(x - self.gamma.view(view)) + self.zeta.view(view)
