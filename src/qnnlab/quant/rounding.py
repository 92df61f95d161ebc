"""Rounding helpers shared by the grid quantizers."""

from __future__ import annotations

import torch


def round_to_int(v: torch.Tensor, stochastic: bool) -> torch.Tensor:
    """Nearest integer, or stochastic rounding floor(v + u), u ~ U[0, 1), for which E[q] = v."""
    if stochastic:
        return torch.floor(v + torch.rand_like(v))
    return torch.round(v)  # ties to even


def sign_pm1(x: torch.Tensor) -> torch.Tensor:
    """sign with sign(+-0) = +1, in x's floating dtype: sign(sign(x) + 1/2) maps {-1, 0, 1} to
    {-1, 1, 1}. Float passes, several times faster on CPU than a compare and a select. NaN stays
    NaN (torch.sign(NaN) is 0, which would binarize a diverged value to +1 unnoticed)."""
    return keep_nan(x, torch.sign(x).add_(0.5).sign_())


def keep_nan(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``q`` with NaN wherever ``x`` is NaN, so a quantizer never turns a divergence into a number."""
    return torch.where(x.isnan(), x, q) if x.is_floating_point() else q


SQRT2_MANTISSA = 0x3504F4  # smallest 23-bit fraction of a float32 above sqrt(2), the log-domain midpoint
EXPONENT_MASK = 0x7F800000
LARGEST_POWER = 0x7F000000  # 2^127


def _ap2_magnitude_bits(x: torch.Tensor) -> torch.Tensor:
    """float32 bit pattern of 2^round(log2|x|) (0 for 0): adding 2^23 - fraction(sqrt 2) carries into
    the exponent exactly when the mantissa is >= sqrt(2); masking keeps the exponent alone."""
    bits = x.view(torch.int32) & 0x7FFFFFFF
    rounded = (bits + (0x800000 - SQRT2_MANTISSA)) & EXPONENT_MASK
    return torch.where(rounded == EXPONENT_MASK, LARGEST_POWER, rounded)  # 2^128 would be inf


def ap2(x: torch.Tensor) -> torch.Tensor:
    """Approximate power of two, AP2(x) = sign(x) * 2^round(log2|x|), and AP2(0) = 0.

    Hubara et al. 2016 (arXiv 1602.02830), used by shift-based batch norm and AdaMax: a product
    with AP2(x) is a bit shift. For x != 0, AP2(x)/x lies in [2^-0.5, 2^0.5]; results are capped
    at 2^127 and subnormal inputs give 0. float32 is rounded on its bit pattern (as hardware would).
    """
    if x.dtype != torch.float32:
        return ap2(x.float()).to(x.dtype)
    x = x.contiguous()
    sign = x.view(torch.int32) & torch.iinfo(torch.int32).min
    return (_ap2_magnitude_bits(x) | sign).view(torch.float32)


def ap2_reciprocal(v: torch.Tensor) -> torch.Tensor:
    """AP2(1 / v) = 2^-round(log2 v) for positive float32 v, formed directly in the exponent field
    (field 254 - e for 2^(e - 127)), kept within float32's normal range."""
    bits = (254 << 23) - _ap2_magnitude_bits(v.contiguous())
    return bits.clamp(0x800000, LARGEST_POWER).view(torch.float32)


def abs_mean(
    x: torch.Tensor, dim: int | tuple[int, ...] | None = None, keepdim: bool = False, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """mean |x| (over ``mask`` when given). Where the plain mean overflows float32 (inputs near its
    largest values) it is summed as sum(|x| / N), whose gradient does not overflow either."""
    a = x.abs()
    if mask is not None:
        return (a * mask / mask.sum().clamp_min(1)).sum()
    fast = a.mean() if dim is None else a.mean(dim=dim, keepdim=keepdim)
    if bool(torch.isfinite(fast).all()):  # the usual case; the scaled sum only when the plain one overflows
        return fast
    if dim is None:
        return (a / a.numel()).sum()
    dims = (dim,) if isinstance(dim, int) else dim
    count = 1
    for d in dims:
        count *= x.shape[d]
    return (a / count).sum(dim=dims, keepdim=keepdim)
