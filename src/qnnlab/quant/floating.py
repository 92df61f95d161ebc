"""Floating-point baselines: the no-op ``float`` and IEEE half precision."""

from __future__ import annotations

import torch

from qnnlab.quant.base import Quantizer, QuantMeta
from qnnlab.quant.registry import register_quantizer

HALF_MAX = 65504.0


@register_quantizer
class Float(Quantizer):
    """No quantization: q = x (the float32 baseline)."""

    name = "float"
    summary = "no quantization (float32 baseline)"
    paper = "-"

    @property
    def meta(self) -> QuantMeta:
        return QuantMeta("float", 32)

    def hard(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@register_quantizer
class Half(Quantizer):
    """IEEE float16 rounding, saturating at +-65504 instead of overflowing to inf; STE backward.

    Gupta et al. 2015 (arXiv 1502.02551) and Courbariaux et al. 2014 compare half precision.
    """

    name = "half"
    summary = "IEEE half precision (saturating), straight-through"
    paper = "Courbariaux et al. 2014, arXiv 1412.7024"

    @property
    def meta(self) -> QuantMeta:
        return QuantMeta("half", 16)

    def clip_range(self) -> tuple[float, float]:
        return (-HALF_MAX, HALF_MAX)

    def hard(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(-HALF_MAX, HALF_MAX).half().to(x.dtype)
