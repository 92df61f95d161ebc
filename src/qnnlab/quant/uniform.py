"""k-bit uniform grids: DoReFa weights and activations, signed symmetric, unsigned affine."""

from __future__ import annotations

import torch

from qnnlab.quant.base import Quantizer, QuantMeta
from qnnlab.quant.registry import register_quantizer
from qnnlab.quant.rounding import abs_mean, round_to_int, sign_pm1
from qnnlab.quant.spec import Param, in_range

BITS = Param("bits", int, 2, "bit width", in_range(1, 16))
STOCHASTIC = Param("stochastic", bool, False, "stochastic rounding floor(v + u), unbiased")


def quantize_unit(v: torch.Tensor, bits: int, stochastic: bool) -> torch.Tensor:
    """DoReFa's quantize_k on [0, 1]: round((2^k - 1) v) / (2^k - 1)."""
    n = 2**bits - 1
    return round_to_int(v.clamp(0, 1) * n, stochastic).clamp(0, n) / n


@register_quantizer
class DoReFaActivation(Quantizer):
    """DoReFa activations: q = quantize_k(clip(x, 0, 1)), a grid of 2^k levels on [0, 1].

    Backward: STE through the rounding, zero outside [0, 1] from the clip.
    Zhou et al. 2016 (arXiv 1606.06160).
    """

    name = "dorefa"
    summary = "DoReFa k-bit activation: round((2^k-1) clip(x,0,1)) / (2^k-1)"
    paper = "Zhou et al. 2016, arXiv 1606.06160"
    params = (BITS, STOCHASTIC)
    estimators = ("ste", "clipped")

    @property
    def meta(self) -> QuantMeta:
        return QuantMeta("int", self.bits, signed=False, stochastic=self.stochastic, grid=(0.0, 1.0))

    def clip_range(self) -> tuple[float, float]:
        return (0.0, 1.0)

    def hard(self, x: torch.Tensor) -> torch.Tensor:
        return quantize_unit(x, self.bits, self.stochastic)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.estimator(x.clamp(0, 1), self)


@register_quantizer
class DoReFaWeight(Quantizer):
    """DoReFa weights.

    k > 1: q = 2 quantize_k(tanh(x) / (2 max|tanh(x)|) + 1/2) - 1, the tanh normalisation being
    differentiated and the rounding passed straight through.
    k = 1: q = E(|x|) sign(x), with dq/dx = 1 (pure STE, as in the paper).
    Zhou et al. 2016 (arXiv 1606.06160).
    """

    name = "dorefa_w"
    summary = "DoReFa k-bit weight: tanh-normalised to [-1, 1], k=1 is E|w| sign(w)"
    paper = "Zhou et al. 2016, arXiv 1606.06160"
    params = (BITS, STOCHASTIC)
    estimators = ("ste", "clipped")

    @property
    def meta(self) -> QuantMeta:
        return QuantMeta(
            "binary" if self.bits == 1 else "int", self.bits, stochastic=self.stochastic, scaled=self.bits == 1
        )

    def clip_range(self) -> tuple[float, float]:
        return (-1.0, 1.0) if self.bits == 1 else (0.0, 1.0)

    def hard(self, x: torch.Tensor) -> torch.Tensor:
        if self.bits == 1:
            return sign_pm1(x) * abs_mean(x)
        return quantize_unit(x, self.bits, self.stochastic)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bits == 1 or x.numel() == 0:  # an empty tensor has no largest weight to scale by
            return self.estimator(x, self)
        if self.estimator.name == "ste" and not self.stochastic:
            return _DoReFaWeightSTE.apply(x, self.bits)
        t = torch.tanh(x)
        t = t / (2 * t.abs().max().clamp_min(1e-12)) + 0.5
        return 2 * self.estimator(t, self) - 1


class _DoReFaWeightSTE(torch.autograd.Function):
    """DoReFa's k-bit weights with the straight-through estimator, fused: the same values and
    gradients as the composed autograd graph (the path through max|tanh| included), in fewer
    passes over the weights. With t = tanh(x), m = max|t|, u = t / (2m) + 1/2, y = 2 q_k(u) - 1:
    dL/dt = (2 g) / (2m) - e_a sign(t_a) sum_i 2 g_i t_i / (2 m^2), a = argmax |t|;
    dL/dx = dL/dt (1 - t^2)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, bits: int) -> torch.Tensor:
        t = torch.tanh(x)
        flat = t.abs().reshape(-1)
        a = int(flat.argmax())
        m = flat[a].clamp_min(1e-12)
        n = 2**bits - 1
        y = t.mul(n / 2 / m).add_(n / 2).round_().clamp_(0, n).mul_(2 / n).sub_(1)
        ctx.save_for_backward(t, m)
        ctx.argmax = a
        return y

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        t, m = ctx.saved_tensors
        grad_t = g / m
        flat = grad_t.view(-1)
        flat[ctx.argmax] -= torch.sign(t.view(-1)[ctx.argmax]) * (g * t).sum() / (m * m)
        return grad_t.mul_(1 - t * t), None


@register_quantizer
class SymmetricInt(Quantizer):
    """Signed symmetric k-bit: q = r * round(n * clip(x / r, -1, 1)) / n, n = 2^(k-1) - 1.

    2^k - 1 levels symmetric around 0 (zero exact). The QNN paper's linear quantization
    (Hubara et al. 2016, arXiv 1609.07061); default estimator clipped STE (zero outside [-r, r]).
    """

    name = "int"
    summary = "signed symmetric k-bit grid on [-range, range], zero exact"
    paper = "Hubara et al. 2016, arXiv 1609.07061"
    params = (
        Param("bits", int, 4, "bit width", in_range(2, 16)),
        Param("range", float, 1.0, "clip range r", in_range(1e-30, 1e30)),
        STOCHASTIC,
    )
    estimators = ("clipped", "ste")

    @property
    def meta(self) -> QuantMeta:
        return QuantMeta("int", self.bits, stochastic=self.stochastic)

    def clip_range(self) -> tuple[float, float]:
        return (-self.range, self.range)

    def hard(self, x: torch.Tensor) -> torch.Tensor:
        n = 2 ** (self.bits - 1) - 1
        v = (x / self.range).clamp(-1, 1) * n
        return round_to_int(v, self.stochastic).clamp(-n, n) * (self.range / n)


@register_quantizer
class UnsignedUniform(Quantizer):
    """Unsigned k-bit affine grid on [lo, hi]: q = lo + s round((clip(x) - lo) / s), s = (hi-lo)/(2^k-1).

    For input data: the QNN paper feeds the first layer 8-bit fixed-point pixels
    (``uniform:bits=8`` on inputs in [0, 1]); fewer bits measure how feature discretization
    itself affects results. Hubara et al. 2016 (arXiv 1609.07061).
    """

    name = "uniform"
    summary = "unsigned k-bit grid on [lo, hi]; input-data quantization (QNN: 8-bit first layer)"
    paper = "Hubara et al. 2016, arXiv 1609.07061"
    params = (
        Param("bits", int, 8, "bit width", in_range(1, 16)),
        Param("lo", float, 0.0, "lowest level"),
        Param("hi", float, 1.0, "highest level"),
        STOCHASTIC,
    )
    estimators = ("clipped", "ste")

    def validate(self) -> None:
        if not self.lo < self.hi:
            raise ValueError(f"uniform: lo={self.lo} must be below hi={self.hi}")

    @property
    def meta(self) -> QuantMeta:
        return QuantMeta("int", self.bits, signed=False, stochastic=self.stochastic, grid=(self.lo, self.hi))

    def clip_range(self) -> tuple[float, float]:
        return (self.lo, self.hi)

    def hard(self, x: torch.Tensor) -> torch.Tensor:
        width = self.hi - self.lo
        return self.lo + quantize_unit((x - self.lo) / width, self.bits, self.stochastic) * width
