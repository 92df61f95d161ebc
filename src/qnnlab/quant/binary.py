"""Binary quantizers: deterministic and stochastic sign."""

from __future__ import annotations

import torch

from qnnlab.quant.base import Quantizer, QuantMeta
from qnnlab.quant.registry import register_quantizer
from qnnlab.quant.rounding import keep_nan, sign_pm1
from qnnlab.quant.spec import Param

SIGN_ESTIMATORS = ("clipped", "ste", "hardsigmoid", "approxsign", "swishsign")


@register_quantizer
class Sign(Quantizer):
    """Deterministic binarization q = sign(x), with sign(0) = +1.

    Default estimator: clipped STE (dq/dx = 1{|x| <= 1}). BinaryConnect (Courbariaux et al. 2015,
    arXiv 1511.00363) and BNN (Hubara, Courbariaux et al. 2016, arXiv 1602.02830).
    """

    name = "sign"
    summary = "deterministic sign, sign(0) = +1"
    paper = "Courbariaux et al. 2015, arXiv 1511.00363; Hubara et al. 2016, arXiv 1602.02830"
    estimators = SIGN_ESTIMATORS

    @property
    def meta(self) -> QuantMeta:
        return QuantMeta("binary", 1)

    def hard(self, x: torch.Tensor) -> torch.Tensor:
        return sign_pm1(x)


@register_quantizer
class StochasticSign(Quantizer):
    """Stochastic binarization: q = +1 with probability p(x), else -1.

    law=hard: p = clip((x + 1) / 2, 0, 1), the hard sigmoid of BinaryConnect, so E[q] = clip(x, -1, 1).
    law=sigmoid: p = 1 / (1 + exp(-x)) (Bengio et al. 2013's stochastic binary neurons).
    Default estimator: clipped STE, the derivative of E[q] for the hard sigmoid.
    """

    name = "stochastic_sign"
    summary = "stochastic binarization, P(+1) = hard sigmoid clip((x+1)/2, 0, 1)"
    paper = "Courbariaux et al. 2015, arXiv 1511.00363"
    params = (Param("law", str, "hard", "probability of +1: hard or sigmoid", choices=("hard", "sigmoid")),)
    estimators = ("clipped", "ste", "hardsigmoid", "reinforce", "gumbel")

    @property
    def meta(self) -> QuantMeta:
        return QuantMeta("binary", 1, stochastic=True)

    def prob(self, x: torch.Tensor) -> torch.Tensor:
        if self.law == "sigmoid":
            return torch.sigmoid(x)
        return ((x + 1) / 2).clamp(0, 1)

    def hard(self, x: torch.Tensor) -> torch.Tensor:
        if self.law == "hard":  # P(x > 2u - 1) = clip((x + 1) / 2, 0, 1) for u ~ U[0, 1)
            # +1 where x - (2u - 1) > 0: sign(sign(d) - 1/2) maps {-1, 0, 1} to {-1, -1, 1} in float
            # passes, several times faster on CPU than a compare into a bool tensor
            return keep_nan(x, torch.rand_like(x).mul_(2).sub_(1).neg_().add_(x).sign_().sub_(0.5).sign_())
        return keep_nan(x, torch.bernoulli(self.prob(x).nan_to_num(0.5)) * 2 - 1)

    def deterministic(self) -> Quantizer:
        """sign(x): the most probable value of the sample."""
        return Sign()
