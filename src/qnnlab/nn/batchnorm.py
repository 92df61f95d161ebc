"""Shift-based batch normalization (Hubara, Courbariaux et al. 2016, arXiv 1602.02830, Alg. 3).

Every multiplication of batch norm becomes a product with a power of two (a shift), using
AP2(x) = sign(x) 2^round(log2|x|), AP2(0) = 0:

    C = x - mean(x)                       centred input
    var~ = mean(C * AP2(C))               variance without multiplications
    s = AP2(1 / sqrt(var~ + eps))         inverse deviation as a shift
    y = AP2(gamma) * (C * s) + beta

Approximation error, elementwise against exact batch norm: AP2(v)/v lies in [2^-1/2, 2^1/2], so
var~/var lies in [2^-1/2, 2^1/2], and (y - beta) / (y_exact - beta) lies in [2^-5/4, 2^5/4]
(a factor 2^1/2 from AP2(gamma), 2^1/2 from rounding s, 2^1/4 from var~). The sign of every
normalized value is exact, which is what a following sign activation reads.

Backward (the paper leaves it open): the exact batch-norm gradient with the same replacements,
    dx = AP2(gamma) s (dy - mean(dy) - x^ AP2(mean(dy AP2(x^)))),
    dgamma = sum(dy AP2(x^)),  dbeta = sum(dy),  x^ = C s,
the AP2 factors being passed straight through, so every product is again a shift.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from qnnlab.quant.rounding import ap2


class _ShiftBatchNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float):
        dims = [d for d in range(x.dim()) if d != 1]
        shape = [1, -1] + [1] * (x.dim() - 2)
        mean = x.mean(dims, keepdim=True)
        centred = x - mean
        var = (centred * ap2(centred)).mean(dims, keepdim=True)
        s = ap2(torch.rsqrt(var + eps))
        xhat = centred * s
        g = ap2(weight).reshape(shape)
        ctx.save_for_backward(xhat, s, g)
        ctx.dims = dims
        ctx.mark_non_differentiable(mean, var)
        return xhat * g + bias.reshape(shape), mean.reshape(-1), var.reshape(-1)

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor, *_: Any):
        xhat, s, g = ctx.saved_tensors
        dims = ctx.dims
        count = dy.numel() // dy.shape[1]
        dgamma = (dy * ap2(xhat)).sum(dims, keepdim=True)
        dbeta = dy.sum(dims, keepdim=True)
        dx = g * s * (dy - dbeta / count - xhat * ap2(dgamma / count))
        return dx, dgamma.reshape(-1), dbeta.reshape(-1), None


class _ShiftBatchNorm(nn.modules.batchnorm._BatchNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        weight = self.weight if self.affine else x.new_ones(self.num_features)
        bias = self.bias if self.affine else x.new_zeros(self.num_features)
        shape = [1, -1] + [1] * (x.dim() - 2)
        use_batch = self.training or not self.track_running_stats
        if not use_batch:
            s = ap2(torch.rsqrt(self.running_var + self.eps))
            return (x - self.running_mean.reshape(shape)) * (ap2(weight) * s).reshape(shape) + bias.reshape(shape)
        y, mean, var = _ShiftBatchNormFunction.apply(x, weight, bias, self.eps)
        if self.training and self.track_running_stats:
            self._update_running_stats(mean, var, x.numel() // x.shape[1])
        return y

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, count: int) -> None:
        self.num_batches_tracked += 1
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        unbiased = var * count / max(count - 1, 1)
        self.running_mean.lerp_(mean, factor)
        self.running_var.lerp_(unbiased, factor)


class ShiftBatchNorm1d(_ShiftBatchNorm, nn.BatchNorm1d):
    """Shift-based batch norm over (B, C) or (B, C, L) inputs; see the module docstring."""


class ShiftBatchNorm2d(_ShiftBatchNorm, nn.BatchNorm2d):
    """Shift-based batch norm over (B, C, H, W) inputs; see the module docstring."""
