"""The sum of a residual block's branch and its shortcut, as a module the cost rules can count."""

from __future__ import annotations

import torch
from torch import nn


class ResidualSum(nn.Module):
    """y = branch + shortcut (He et al. 2016): one addition per output element."""

    def forward(self, branch: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        return branch + shortcut
