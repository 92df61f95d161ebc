"""Non-uniform level tables fitted to data: ZipML variance-optimal and Lloyd-Max levels.

Both fit their levels on the first tensor they see (or on every training call with refit=1, or
explicitly with ``fit(data)``), so they serve for weights, activations and input data alike.
Fitting runs in float64 on data scaled by max|x|, so huge inputs neither overflow nor lose levels.
"""

from __future__ import annotations

from typing import Any

import torch

from qnnlab.quant.base import Quantizer, QuantMeta
from qnnlab.quant.registry import register_quantizer
from qnnlab.quant.rounding import keep_nan
from qnnlab.quant.spec import Param, in_range

LEVELS = Param("levels", int, 8, "number of levels", in_range(2, 256))
REFIT = Param("refit", bool, False, "refit the levels on every training-mode call")
CANDIDATES = 256  # candidate level positions (data quantiles) searched by the ZipML program
FIT_SAMPLE = 200_000  # values drawn from large tensors for fitting


class _FittedLevels(Quantizer):
    estimators = ("ste", "clipped")

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        self.register_buffer("values", torch.zeros(self.levels))
        self.register_buffer("fitted", torch.tensor(False))

    def fit(self, data: torch.Tensor) -> _FittedLevels:
        x = data.detach().reshape(-1).to(torch.float64)
        x = x[torch.isfinite(x)]  # NaN and infinity say nothing about where the levels belong
        if x.numel() == 0:
            return self
        if x.numel() > FIT_SAMPLE:
            x = x[torch.randint(x.numel(), (FIT_SAMPLE,), device=x.device)]
        scale = x.abs().max()
        if scale == 0:
            self.values.zero_()
        else:
            levels = self._fit_unit(torch.sort(x / scale).values)
            self.values.copy_((levels * scale).to(self.values.dtype))
        self.fitted.fill_(True)
        return self

    def _fit_unit(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def clip_range(self) -> tuple[float, float]:
        return (float(self.values[0]), float(self.values[-1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() == 0:
            return x.clone()
        if not bool(self.fitted) or (self.refit and self.training):
            self.fit(x)
        return keep_nan(x, self.estimator(x, self))

    def _neighbours(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        levels = self.values.to(x.dtype)
        c = x.clamp(levels[0], levels[-1])
        idx = (torch.searchsorted(levels, c.reshape(-1).contiguous(), right=True) - 1).clamp(0, len(levels) - 2)
        lo, hi = levels[idx].reshape(x.shape), levels[idx + 1].reshape(x.shape)
        return c, lo, hi


def _pad_unique(x: torch.Tensor, count: int) -> torch.Tensor | None:
    """The distinct values when there are no more than ``count`` of them, padded by repeating the last."""
    unique = torch.unique(x)
    if unique.numel() > count:
        return None
    return torch.cat([unique, unique[-1:].expand(count - unique.numel())])


@register_quantizer
class ZipMLLevels(_FittedLevels):
    """ZipML variance-optimal levels with unbiased stochastic rounding between neighbours.

    For x in [a, b] (adjacent levels), q = b with probability (x - a)/(b - a), else a, so E[q] = x
    and Var = (b - x)(x - a). The levels minimise the total variance over the data,
    sum_x (b(x) - x)(x - a(x)), found by dynamic programming over candidate positions (data
    quantiles, min and max included) with prefix sums. Zhang et al. 2017, ZipML (ICML 2017).
    """

    name = "zipml"
    summary = "ZipML variance-optimal levels, unbiased stochastic rounding (fitted to data)"
    paper = "Zhang et al. 2017, ZipML, ICML"
    params = (LEVELS, REFIT)

    @property
    def meta(self) -> QuantMeta:
        return QuantMeta("levels", max(1, (self.levels - 1).bit_length()), stochastic=True)

    def _fit_unit(self, x: torch.Tensor) -> torch.Tensor:
        small = _pad_unique(x, self.levels)
        if small is not None:
            return small
        quantiles = torch.linspace(0, 1, CANDIDATES, dtype=x.dtype)
        cand = torch.unique(torch.quantile(x, quantiles))
        m = cand.numel()
        if m <= self.levels:
            return torch.cat([cand, cand[-1:].expand(self.levels - m)])
        zero = x.new_zeros(1)
        s0 = torch.arange(x.numel() + 1, dtype=x.dtype)
        s1 = torch.cat([zero, torch.cumsum(x, 0)])
        s2 = torch.cat([zero, torch.cumsum(x * x, 0)])
        pos = torch.searchsorted(x, cand)  # data below candidate c lies at indices < pos
        i, j = pos[:, None], pos[None, :]
        a, b = cand[:, None], cand[None, :]
        cost = -(s2[j] - s2[i]) + (a + b) * (s1[j] - s1[i]) - a * b * (s0[j] - s0[i])
        cost = torch.where(j > i, cost.clamp_min(0), torch.full_like(cost, float("inf")))
        cost = torch.where(a < b, cost, torch.full_like(cost, float("inf")))
        # best[k][t]: least variance covering data up to cand[t] with k+1 levels, the last at cand[t]
        best = torch.full((m,), float("inf"), dtype=x.dtype)
        best[0] = 0.0
        parents = []
        for _ in range(self.levels - 1):
            total = best[:, None] + cost
            best, parent = total.min(dim=0)
            parents.append(parent)
        chosen = [m - 1]
        for parent in reversed(parents):
            chosen.append(int(parent[chosen[-1]]))
        return cand[torch.tensor(chosen[::-1])]

    def hard(self, x: torch.Tensor) -> torch.Tensor:
        c, lo, hi = self._neighbours(x)
        width = hi - lo
        p = torch.where(
            width > 0, (c - lo) / torch.where(width > 0, width, torch.ones_like(width)), torch.zeros_like(c)
        )
        return torch.where(torch.rand_like(c) < p, hi, lo)


@register_quantizer
class LloydMaxLevels(_FittedLevels):
    """Lloyd-Max (1-D k-means) levels with nearest rounding: least mean squared error on the data.

    Alternates boundaries at midpoints of adjacent levels and levels at the mean of their cell,
    starting from quantiles. Lloyd 1982; Max 1960.
    """

    name = "lloydmax"
    summary = "Lloyd-Max / k-means levels fitted to data, nearest rounding"
    paper = "Lloyd 1982 (IEEE T-IT); Max 1960 (IRE T-IT)"
    params = (LEVELS, REFIT)
    iterations = 40

    @property
    def meta(self) -> QuantMeta:
        return QuantMeta("levels", max(1, (self.levels - 1).bit_length()))

    def _fit_unit(self, x: torch.Tensor) -> torch.Tensor:
        small = _pad_unique(x, self.levels)
        if small is not None:
            return small
        levels = torch.quantile(x, (torch.arange(self.levels, dtype=x.dtype) + 0.5) / self.levels)
        for _ in range(self.iterations):
            bounds = (levels[1:] + levels[:-1]) / 2
            cell = torch.searchsorted(bounds, x)
            count = torch.bincount(cell, minlength=self.levels).to(x.dtype)
            total = torch.bincount(cell, weights=x, minlength=self.levels)
            levels = torch.where(count > 0, total / count.clamp_min(1), levels)
            levels = torch.sort(levels).values
        return levels

    def hard(self, x: torch.Tensor) -> torch.Tensor:
        c, lo, hi = self._neighbours(x)
        return torch.where(c - lo <= hi - c, lo, hi)
