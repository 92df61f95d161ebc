"""Ternary quantizers: stochastic TernaryConnect and thresholded ternary weights."""

from __future__ import annotations

import torch

from qnnlab.quant.base import Quantizer, QuantMeta
from qnnlab.quant.registry import register_quantizer
from qnnlab.quant.rounding import abs_mean, keep_nan
from qnnlab.quant.spec import Param, in_range


@register_quantizer
class StochasticTernary(Quantizer):
    """TernaryConnect: for c = clip(x, -1, 1), q = sign(c) with probability |c|, else 0.

    E[q] = clip(x, -1, 1). Lin, Courbariaux et al. 2016, "Neural networks with few
    multiplications" (arXiv 1510.03009).
    """

    name = "ternary_stochastic"
    summary = "stochastic ternary {-1, 0, +1}, P(sign) = |clip(x)|"
    paper = "Lin et al. 2016, arXiv 1510.03009"
    estimators = ("clipped", "ste")

    @property
    def meta(self) -> QuantMeta:
        return QuantMeta("ternary", 2, stochastic=True)

    def hard(self, x: torch.Tensor) -> torch.Tensor:
        c = x.clamp(-1, 1)
        return keep_nan(x, torch.sign(c) * torch.bernoulli(c.abs().nan_to_num(0.0)))

    def deterministic(self) -> Quantizer:
        """round(clip(x, -1, 1)), the most probable value: the 2-bit symmetric grid {-1, 0, 1}."""
        from qnnlab.quant.registry import get

        return get("int:bits=2")


@register_quantizer
class ThresholdTernary(Quantizer):
    """Thresholded ternary weights (TWN): q = alpha * sign(x) * 1{|x| > delta}.

    delta = factor * mean|x| (factor 0.7 approximates the optimum for Gaussian weights), and with
    scaled=1, alpha = mean of |x| over {|x| > delta} (else alpha = 1). Li, Zhang, Liu 2016,
    Ternary Weight Networks (arXiv 1605.04711). alpha is differentiated; the threshold step uses
    the estimator.
    """

    name = "ternary"
    summary = "thresholded ternary (TWN): delta = 0.7 mean|w|, optional scale alpha"
    paper = "Li et al. 2016, arXiv 1605.04711"
    params = (
        Param("factor", float, 0.7, "delta = factor * mean|x|", in_range(0.0, 10.0)),
        Param("scaled", bool, True, "multiply by alpha = mean |x| above delta"),
    )
    estimators = ("ste", "clipped")

    @property
    def meta(self) -> QuantMeta:
        return QuantMeta("ternary", 2, scaled=self.scaled)

    def hard(self, x: torch.Tensor) -> torch.Tensor:
        delta = self.factor * abs_mean(x)
        return torch.sign(x) * (x.abs() > delta).to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.estimator(x, self)
        if not self.scaled:
            return q
        mask = q.detach() != 0
        alpha = abs_mean(x, mask=mask)
        return alpha * q
