"""Quantizers of the backward pass: identity forward, the gradient quantized on its way back.

Used as a layer's ``grad_quantizer`` they quantize dL/dy, the error arriving at the layer output.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from qnnlab.quant.base import Quantizer, QuantMeta
from qnnlab.quant.fixed_point import DynamicFixedPoint, FixedPoint
from qnnlab.quant.levels import ZipMLLevels
from qnnlab.quant.pow2 import round_pow2
from qnnlab.quant.registry import register_quantizer
from qnnlab.quant.rounding import keep_nan
from qnnlab.quant.spec import Param, in_range


class _QuantizeGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        ctx.fn = fn
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return ctx.fn(grad), None


class _GradientQuantizer(Quantizer):
    def hard(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _QuantizeGradient.apply(x, self.quantize_gradient)

    def quantize_gradient(self, g: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def _per_sample_max(g: torch.Tensor) -> torch.Tensor:
    """max |g| over every axis but the first, shaped to broadcast against g."""
    if g.dim() < 2:
        return g.abs().max().clamp_min(1e-30)
    return g.abs().flatten(1).max(dim=1).values.clamp_min(1e-30).reshape(-1, *([1] * (g.dim() - 1)))


@register_quantizer
class DoReFaGradient(_GradientQuantizer):
    """DoReFa gradient quantization, k bits, stochastic and unbiased.

    dr -> 2 m [quantize_k(dr / (2m) + 1/2 + N(k)) - 1/2], m = max |dr| over all axes but the batch
    axis, N(k) = s / (2^k - 1) with s ~ U(-1/2, 1/2). Zhou et al. 2016 (arXiv 1606.06160), eq. 12.
    """

    name = "grad_dorefa"
    summary = "backward: DoReFa k-bit stochastic gradient quantization"
    paper = "Zhou et al. 2016, arXiv 1606.06160"
    params = (Param("bits", int, 6, "gradient bit width", in_range(1, 16)),)

    @property
    def meta(self) -> QuantMeta:
        return QuantMeta("int", self.bits, stochastic=True, backward=True)

    def quantize_gradient(self, g: torch.Tensor) -> torch.Tensor:
        n = 2**self.bits - 1
        m = _per_sample_max(g)
        v = (g / (2 * m) + 0.5) * n + (torch.rand_like(g) - 0.5)
        return 2 * m * (torch.round(v).clamp(0, n) / n - 0.5)


@register_quantizer
class PowerOfTwoGradient(_GradientQuantizer):
    """Errors rounded to powers of two, so back-propagation multiplies by shifts.

    g -> sign(g) 2^round(log2|g|) with exponents in [e_max - exponents + 1, e_max], e_max the
    exponent of max|g| per sample; smaller errors become 0. Lin et al. 2016 (arXiv 1510.03009).
    """

    name = "grad_pow2"
    summary = "backward: errors rounded to powers of two (few multiplications)"
    paper = "Lin et al. 2016, arXiv 1510.03009"
    params = (Param("exponents", int, 8, "number of exponent values kept below the largest", in_range(1, 64)),)

    @property
    def meta(self) -> QuantMeta:
        return QuantMeta("pow2", 1 + (self.exponents).bit_length(), backward=True)

    def quantize_gradient(self, g: torch.Tensor) -> torch.Tensor:
        top = torch.round(torch.log2(_per_sample_max(g)))
        return round_pow2(g, top - self.exponents + 1, top)


class _FormatGradient(_GradientQuantizer):
    """The back-propagated errors rounded to a forward quantizer's number format: Courbariaux et
    al. 2014 keep the propagations in both directions in (dynamic) fixed point, with separate bit
    widths for propagations and parameter updates (arXiv 1412.7024)."""

    paper = "Courbariaux et al. 2014, arXiv 1412.7024"
    format_class: type[Quantizer]

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        self.format = self.format_class(**{p.name: getattr(self, p.name) for p in self.params})

    @property
    def meta(self) -> QuantMeta:
        forward = self.format.meta
        return QuantMeta(forward.kind, forward.bits, stochastic=forward.stochastic, backward=True)

    def quantize_gradient(self, g: torch.Tensor) -> torch.Tensor:
        return self.format.hard(g)


@register_quantizer
class FixedPointGradient(_FormatGradient):
    """Backward: errors in saturating fixed point Qm.n (``fixed``); small errors round to zero."""

    name = "grad_fixed"
    summary = "backward: errors in fixed point Qm.n"
    format_class = FixedPoint
    params = FixedPoint.params


@register_quantizer
class DynamicFixedPointGradient(_FormatGradient):
    """Backward: errors in dynamic fixed point (``dfxp``), their exponent tracked per layer."""

    name = "grad_dfxp"
    summary = "backward: errors in dynamic fixed point, B bits"
    format_class = DynamicFixedPoint
    params = DynamicFixedPoint.params


@register_quantizer
class ZipMLGradient(_GradientQuantizer):
    """Backward: errors on ZipML's variance-optimal levels with unbiased stochastic rounding, the
    levels fitted anew to each error tensor (the data is the gradient, whose distribution moves).
    E[q] = g, so the updates stay unbiased. Zhang et al. 2017, ZipML (ICML), applied to gradients."""

    name = "grad_zipml"
    summary = "backward: errors on ZipML levels fitted to them, unbiased"
    paper = "Zhang et al. 2017, ZipML, ICML"
    params = ZipMLLevels.params[:1]

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        self.format = ZipMLLevels(levels=self.levels)

    @property
    def meta(self) -> QuantMeta:
        return QuantMeta("levels", self.format.meta.bits, stochastic=True, backward=True)

    def quantize_gradient(self, g: torch.Tensor) -> torch.Tensor:
        if g.numel() == 0:
            return g
        self.format.fit(g)
        return keep_nan(g, self.format.hard(g))
