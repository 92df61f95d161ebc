"""Fixed point Qm.n and dynamic fixed point (Courbariaux, Bengio, David 2014)."""

from __future__ import annotations

from typing import Any

import torch

from qnnlab.quant._exponents import needed_exponents
from qnnlab.quant.base import Quantizer, QuantMeta
from qnnlab.quant.registry import register_quantizer
from qnnlab.quant.rounding import round_to_int
from qnnlab.quant.spec import Param, in_range

STOCHASTIC = Param("stochastic", bool, False, "stochastic rounding floor(v + u), unbiased")
MAX_EXPONENT = 127  # float32: 2^127 is finite, and the step 2^(e-B+1) must stay a normal number
STEPS_DOWN = 4  # exponent steps below the one covering max|x| tried before the histogram


@register_quantizer
class FixedPoint(Quantizer):
    """Saturating signed fixed point Qm.n: 1 sign bit, m integer bits, n fraction bits.

    q = clip(2^-n round(2^n x), -2^m, 2^m - 2^-n). Courbariaux et al. 2014 (arXiv 1412.7024);
    Gupta et al. 2015 for stochastic rounding (arXiv 1502.02551).
    """

    name = "fixed"
    summary = "saturating fixed point Qm.n (1 + m + n bits)"
    paper = "Courbariaux et al. 2014, arXiv 1412.7024; Gupta et al. 2015, arXiv 1502.02551"
    params = (
        Param("m", int, 3, "integer bits", in_range(0, 31)),
        Param("n", int, 12, "fraction bits", in_range(0, 31)),
        STOCHASTIC,
    )
    estimators = ("ste", "clipped")

    def validate(self) -> None:
        if 1 + self.m + self.n > 32:
            raise ValueError(f"fixed: 1 + m + n = {1 + self.m + self.n} bits; at most 32 are supported")

    @property
    def meta(self) -> QuantMeta:
        return QuantMeta("fixed", 1 + self.m + self.n, stochastic=self.stochastic)

    def clip_range(self) -> tuple[float, float]:
        return (-(2.0**self.m), 2.0**self.m - 2.0**-self.n)

    def hard(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = self.clip_range()
        scale = 2.0**self.n
        return (round_to_int(x.clamp(lo, hi) * scale, self.stochastic) / scale).clamp(lo, hi)


@register_quantizer
class DynamicFixedPoint(Quantizer):
    """Dynamic fixed point: B-bit fixed point whose scaling exponent e is shared by a group.

    Values: step 2^(e-B+1), range [-2^e, 2^e - 2^(e-B+1)]. In training mode e follows the
    observed overflow rate: it rises at once to the smallest exponent whose overflow rate on the
    current tensor is <= ``rate`` (so no tensor ever overflows more than the target), and falls
    by one per call while the lower exponent would also keep overflows <= ``rate`` (halving the
    scale slowly, as the paper's periodic update does). In eval mode e is frozen.
    group=tensor: one exponent; group=channel: one per slice along dim 0 (output channels).
    Courbariaux, Bengio, David 2014 (arXiv 1412.7024).
    """

    name = "dfxp"
    summary = "dynamic fixed point: B bits, shared exponent tracking a target overflow rate"
    paper = "Courbariaux et al. 2014, arXiv 1412.7024"
    params = (
        Param("bits", int, 10, "total bits including sign", in_range(2, 32)),
        Param("rate", float, 1e-4, "largest overflow rate tolerated", in_range(0.0, 0.5)),
        Param(
            "group", str, "tensor", "exponent shared per tensor or per channel (dim 0)", choices=("tensor", "channel")
        ),
        STOCHASTIC,
    )
    estimators = ("ste", "clipped")

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        self.register_buffer("exponent", torch.zeros(0, dtype=torch.int32))
        self._bounds = (torch.tensor(float("-inf")), torch.tensor(float("inf")))

    @property
    def meta(self) -> QuantMeta:
        return QuantMeta("fixed", self.bits, stochastic=self.stochastic)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        saved = state_dict.get(prefix + "exponent")
        if saved is not None:
            self.exponent = torch.zeros_like(saved)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _groups(self, x: torch.Tensor) -> torch.Tensor:
        if self.group == "channel" and x.dim() > 0:
            return x.flatten(1) if x.dim() > 1 else x.unsqueeze(1)
        return x.reshape(1, -1)

    def needed_exponent(self, x: torch.Tensor) -> torch.Tensor:
        """Per group, the smallest e with count(|x| > 2^e (1 - 2^(1-B))) <= floor(rate * n).

        Float32 on the CPU: one pass over the bits (``_exponents``). Other tensors:
        ``search_by_passes``."""
        if x.dtype == torch.float32 and x.device.type == "cpu":
            return needed_exponents(self._groups(x), self.bits, self.rate, self.bits - 126, MAX_EXPONENT)
        return self.search_by_passes(x)

    def search_by_passes(self, x: torch.Tensor) -> torch.Tensor:
        """``needed_exponent`` in torch operations, for any device and dtype. The overflow count
        only falls as e grows, so start at the exponent that covers max|x| (no overflow) and step
        down while the next one still keeps the count within the allowance: usually a max and one
        to three comparison passes. Data that would need more steps (a few huge values far above
        the rest) fall back to a histogram of float exponents."""
        g = self._groups(x.detach()).abs()
        g = torch.where(torch.isfinite(g), g, torch.zeros_like(g))  # NaN stays NaN and infinity saturates
        if g.shape[1] == 0:  # nothing to fit: the smallest exponent
            return torch.full((g.shape[0],), self.bits - 126, dtype=torch.int32)
        allowed = int(self.rate * g.shape[1])
        lowest = self.bits - 126
        usable = 1.0 - 2.0 ** (1 - self.bits)
        top = g.amax(1).to(torch.float64)
        e = torch.ceil(torch.log2(top.clamp_min(2.0**lowest) / usable)).clamp(lowest, MAX_EXPONENT)
        for _ in range(STEPS_DOWN):
            lower = e - 1
            fits = ((g > (torch.exp2(lower) * usable).to(g.dtype).unsqueeze(1)).sum(1) <= allowed) & (lower >= lowest)
            if not bool(fits.any()):
                return e.to(torch.int32)
            e = torch.where(fits, lower, e)
        return self._exponent_by_histogram(g, allowed, lowest, usable)

    def _exponent_by_histogram(self, g: torch.Tensor, allowed: int, lowest: int, usable: float) -> torch.Tensor:
        """One pass histograms the float exponents of |x| (count(|x| >= 2^e) for every e at once);
        the band just below 2^e that the largest code misses is then checked exactly."""
        groups = g.shape[0]
        _, exponents = torch.frexp(g)  # |x| in [2^(e-1), 2^e)
        exponents.masked_fill_(g == 0, lowest)  # frexp(0) has exponent 0, not the bottom bin
        bins = (exponents.clamp(lowest, MAX_EXPONENT + 1) - lowest).long()
        width = MAX_EXPONENT + 2 - lowest
        offsets = torch.arange(groups, device=g.device).unsqueeze(1) * width
        hist = torch.bincount((bins + offsets).reshape(-1), minlength=groups * width).reshape(groups, width)
        at_least = hist.flip(1).cumsum(1).flip(1)  # at_least[:, i]: count(|x| >= 2^(i - 1 + lowest))
        above = torch.cat([at_least[:, 1:], torch.zeros_like(at_least[:, :1])], 1)  # count(|x| >= 2^(i+lowest))
        fits = above <= allowed
        first = torch.where(fits.any(1), fits.float().argmax(1), torch.full((groups,), width - 1))
        # the answer is first or first + 1, or first - 1 where the largest code rounds up to 2^e in
        # g's dtype (float32 from 26 bits), which a value of exactly 2^(e-1) then does not exceed
        e = (first + lowest - 1).clamp(lowest, MAX_EXPONENT)
        for _ in range(2):
            over = (g > (torch.exp2(e.to(g.dtype)) * usable).unsqueeze(1)).sum(1)
            e = torch.where(over > allowed, e + 1, e).clamp(lowest, MAX_EXPONENT)
        return e.to(torch.int32)

    def _current_exponent(self, x: torch.Tensor) -> torch.Tensor:
        groups = self._groups(x).shape[0]
        if not self.training:
            return self.exponent if self.exponent.numel() == groups else self.needed_exponent(x)
        needed = self.needed_exponent(x)
        if self.exponent.numel() != groups:
            self.exponent = needed.clone()
        else:
            self.exponent.copy_(torch.where(needed > self.exponent, needed, torch.maximum(needed, self.exponent - 1)))
        return self.exponent

    def clip_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The range used by the last forward pass, per group (broadcastable to the input)."""
        return self._bounds

    def hard(self, x: torch.Tensor) -> torch.Tensor:
        """clip to [-2^e, 2^e - step], then round to the step 2^(e-B+1); both bounds are multiples
        of the step, so rounding (nearest or stochastic) never leaves the range."""
        e = self._current_exponent(x)
        if e.numel() == 1 and not (self.group == "channel" and x.dim() > 0):
            step = 2.0 ** (int(e) - self.bits + 1)
            lo, hi = -(2.0 ** int(e)), 2.0 ** int(e) - step
            self._bounds = (torch.tensor(lo), torch.tensor(hi))
            return round_to_int(x.clamp(lo, hi).mul_(1 / step), self.stochastic).mul_(step)
        e = e.to(x.dtype).reshape((-1,) + (1,) * (x.dim() - 1))
        step = torch.exp2(e - (self.bits - 1))
        hi = torch.exp2(e) - step
        lo = -torch.exp2(e)
        self._bounds = (lo, hi)
        return round_to_int(torch.maximum(torch.minimum(x, hi), lo) / step, self.stochastic) * step
