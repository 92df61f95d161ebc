"""XNOR-Net scaling: binary weights with per-channel alpha, binary inputs with the scale map K."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from qnnlab.quant.base import Quantizer, QuantMeta
from qnnlab.quant.binary import SIGN_ESTIMATORS
from qnnlab.quant.registry import register_quantizer
from qnnlab.quant.rounding import abs_mean, sign_pm1
from qnnlab.quant.spec import Param


class _ScaledSign(Quantizer):
    """sign(x), sign(0) = +1, with a real scale applied by the quantizer or by the layer."""

    estimators = SIGN_ESTIMATORS

    @property
    def meta(self) -> QuantMeta:
        return QuantMeta("binary", 1, scaled=True)

    def hard(self, x: torch.Tensor) -> torch.Tensor:
        return sign_pm1(x)


@register_quantizer
class XnorWeight(_ScaledSign):
    """Binary weights with a scale: q = alpha sign(W), alpha = mean |W| per output channel.

    alpha is differentiated, sign(W) uses the estimator (clipped by default), giving the paper's
    dC/dW = dC/dW~ (1/n + alpha 1{|W| <= 1}) plus alpha's coupling term. per=tensor uses one alpha.
    Rastegari et al. 2016, XNOR-Net / BWN (arXiv 1603.05279).
    """

    name = "xnor_weight"
    summary = "XNOR-Net / BWN weights: alpha sign(W), alpha = mean|W| per output channel"
    paper = "Rastegari et al. 2016, arXiv 1603.05279"
    params = (
        Param("per", str, "channel", "one alpha per output channel or per tensor", choices=("channel", "tensor")),
    )

    def alpha(self, w: torch.Tensor) -> torch.Tensor:
        if self.per == "tensor" or w.dim() < 2:
            return abs_mean(w)
        return abs_mean(w, dim=tuple(range(1, w.dim())), keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.alpha(x) * self.estimator(x, self)


@register_quantizer
class XnorActivation(_ScaledSign):
    """Binary inputs sign(I) whose layer output is multiplied by XNOR-Net's scale map K.

    Convolution: A = mean over channels of |I|, K = A * k with k the 1/(kh kw) box filter of the
    layer's kernel size, stride, padding and dilation. Linear: K = mean |I| per sample.
    Rastegari et al. 2016 (arXiv 1603.05279), section 3.2.
    """

    name = "xnor_act"
    summary = "XNOR-Net inputs: sign(I), layer output scaled by K = box-filtered mean|I|"
    paper = "Rastegari et al. 2016, arXiv 1603.05279"

    @property
    def meta(self) -> QuantMeta:
        return QuantMeta("binary", 1, scaled=True, output_scale=True)

    def output_scale(self, x: torch.Tensor, layer: nn.Module) -> torch.Tensor:
        if isinstance(layer, nn.Conv2d):
            a = abs_mean(x, dim=1, keepdim=True)
            kh, kw = layer.kernel_size
            box = a.new_full((1, 1, kh, kw), 1.0 / (kh * kw))
            padding = layer.padding
            if layer.padding_mode != "zeros":
                a, padding = F.pad(a, layer._reversed_padding_repeated_twice, mode=layer.padding_mode), 0
            return F.conv2d(a, box, None, layer.stride, padding, layer.dilation)
        return abs_mean(x, dim=-1, keepdim=True)
