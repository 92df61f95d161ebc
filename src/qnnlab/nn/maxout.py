"""Maxout units (Goodfellow et al. 2013), the networks Courbariaux et al. 2014 train in low precision."""

from __future__ import annotations

import torch
from torch import nn


class Maxout(nn.Module):
    """y_j = max over k pieces of x_{j k + i}: (B, units * pieces) -> (B, units)."""

    def __init__(self, pieces: int) -> None:
        super().__init__()
        if type(pieces) is not int or pieces < 1:
            raise ValueError(f"Maxout: pieces={pieces!r} must be a positive integer")
        self.pieces = pieces

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(*x.shape[:-1], -1, self.pieces).amax(-1)

    def extra_repr(self) -> str:
        return f"pieces={self.pieces}"
