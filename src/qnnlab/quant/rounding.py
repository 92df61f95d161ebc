"""Rounding helpers shared by the grid quantizers."""

from __future__ import annotations

import torch


def round_to_int(v: torch.Tensor, stochastic: bool) -> torch.Tensor:
    """Nearest integer, or stochastic rounding floor(v + u), u ~ U[0, 1), for which E[q] = v."""
    if stochastic:
        return torch.floor(v + torch.rand_like(v))
    return torch.round(v)


def sign_pm1(x: torch.Tensor) -> torch.Tensor:
    """sign with sign(0) = +1, in x's dtype."""
    return (x >= 0).to(x.dtype) * 2 - 1


def ap2(x: torch.Tensor) -> torch.Tensor:
    """Approximate power of two, AP2(x) = sign(x) * 2^round(log2|x|), and AP2(0) = 0.

    Hubara et al. 2016 (arXiv 1602.02830), used by shift-based batch norm and AdaMax: a product
    with AP2(x) is a bit shift. For x != 0, AP2(x)/x lies in [2^-0.5, 2^0.5].
    """
    magnitude = torch.exp2(torch.round(torch.log2(x.abs().clamp_min(torch.finfo(x.dtype).tiny))))
    return torch.where(x == 0, torch.zeros_like(x), torch.sign(x) * magnitude)


def abs_mean(x: torch.Tensor, dim: int | tuple[int, ...] | None = None, keepdim: bool = False,
             mask: torch.Tensor | None = None) -> torch.Tensor:
    """mean |x| (over ``mask`` when given), summed as sum(|x| / N) so that neither the sum nor its
    gradient overflows float32 for inputs near its largest values."""
    a = x.abs()
    if mask is not None:
        return (a * mask / mask.sum().clamp_min(1)).sum()
    if dim is None:
        return (a / a.numel()).sum()
    dims = (dim,) if isinstance(dim, int) else dim
    count = 1
    for d in dims:
        count *= x.shape[d]
    return (a / count).sum(dim=dims, keepdim=keepdim)
