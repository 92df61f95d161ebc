"""Power-of-two (logarithmic) quantization: every product with q is a bit shift."""

from __future__ import annotations

import math

import torch

from qnnlab.quant.base import Quantizer, QuantMeta
from qnnlab.quant.registry import register_quantizer
from qnnlab.quant.spec import Param, in_range


def round_pow2(x: torch.Tensor, min_exp: torch.Tensor | int, max_exp: torch.Tensor | int) -> torch.Tensor:
    """sign(x) 2^clip(round(log2|x|), min_exp, max_exp); |x| < 2^(min_exp-1) becomes 0."""
    magnitude = x.abs()
    exponent = torch.round(torch.log2(magnitude.clamp_min(torch.finfo(x.dtype).tiny)))
    exponent = torch.minimum(
        torch.maximum(exponent, torch.as_tensor(min_exp, dtype=x.dtype)), torch.as_tensor(max_exp, dtype=x.dtype)
    )
    q = torch.sign(x) * torch.exp2(exponent)
    return torch.where(magnitude < torch.exp2(torch.as_tensor(min_exp, dtype=x.dtype) - 1), torch.zeros_like(x), q)


@register_quantizer
class PowerOfTwo(Quantizer):
    """Logarithmic quantization q = sign(x) 2^round(log2|x|), exponents in [min_exp, max_exp].

    Magnitudes below 2^(min_exp - 1) become 0; above 2^max_exp they saturate. Rounding is nearest
    in the log domain, so q/x lies in [2^-0.5, 2^0.5] inside the range. Lin et al. 2016
    (arXiv 1510.03009, quantized back propagation); Miyashita et al. 2016 (arXiv 1603.01025).
    """

    name = "pow2"
    summary = "power-of-two / logarithmic: sign(x) 2^round(log2|x|), bounded exponents, zero"
    paper = "Lin et al. 2016, arXiv 1510.03009; Miyashita et al. 2016, arXiv 1603.01025"
    params = (
        Param("min_exp", int, -7, "smallest exponent", in_range(-126, 126)),
        Param("max_exp", int, 0, "largest exponent", in_range(-126, 126)),
    )
    estimators = ("ste", "clipped")

    def validate(self) -> None:
        if self.min_exp > self.max_exp:
            raise ValueError(f"pow2: min_exp={self.min_exp} must not exceed max_exp={self.max_exp}")

    @property
    def meta(self) -> QuantMeta:
        codes = self.max_exp - self.min_exp + 2  # exponents plus zero
        return QuantMeta("pow2", 1 + math.ceil(math.log2(codes)))

    def clip_range(self) -> tuple[float, float]:
        return (-(2.0**self.max_exp), 2.0**self.max_exp)

    def hard(self, x: torch.Tensor) -> torch.Tensor:
        return round_pow2(x, self.min_exp, self.max_exp)
