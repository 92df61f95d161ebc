"""Quantized fully connected layers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from qnnlab.kernels.masks import masked_linear, masked_linear_grads
from qnnlab.nn.quantized import QuantizedLayer, QuantSpec


class QuantLinear(nn.Linear, QuantizedLayer):
    """y = Q_g( K * (Q_i(x) Q_w(W)^T) + b ): nn.Linear with quantized weights and inputs.

    W stays a high-precision latent parameter (BinaryConnect); Q_w(W) is what multiplies. K is the
    input quantizer's output scale (XNOR-Net), 1 for most. With ``float`` quantizers this is
    exactly ``nn.Linear``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        weight_quantizer: QuantSpec = None,
        input_quantizer: QuantSpec = None,
        grad_quantizer: QuantSpec = None,
        update_input_quantizer: QuantSpec = None,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__(in_features, out_features, bias, device, dtype)
        self._set_quantizers(weight_quantizer, input_quantizer, grad_quantizer, update_input_quantizer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._quantized_forward(x, F.linear, lambda b: b)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self.quant_repr()}"


class _MaskedLinear(torch.autograd.Function):
    """y = (M_b * W) x_b / keep per sample, the masks drawn from ``seed`` by the kernels and drawn
    again in the backward pass instead of being stored."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, seed: int, keep: float) -> torch.Tensor:
        ctx.save_for_backward(x, w)
        ctx.seed, ctx.keep = seed, keep
        return masked_linear(x, w, seed, keep)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, w = ctx.saved_tensors
        dx, dw = masked_linear_grads(grad.contiguous(), x, w, ctx.seed, ctx.keep)
        return dx, dw, None, None


class DropConnectLinear(QuantLinear):
    """DropConnect: each sample sees its own random mask on the weights, y_b = (M_b * W) x_b.

    Masks keep each weight with probability 1 - p and scale kept weights by 1/(1 - p), so
    evaluation uses W itself (``inference="mean"``, the mean network) or, as Wan et al. infer,
    matches the moments of the masked sum (``inference="moments"``): u ~ N(W x, p / (1 - p)
    (W * W)(x * x)), one draw per call, so the evaluation mode ``ensemble:N`` averages the
    softmax over N draws (the paper's averaged activations, exact for the classifier). In
    training on the CPU the masks are never stored: the kernels of ``qnnlab.kernels.masks`` draw
    each sample's mask from a seed in the forward product and again in both backward products, so
    memory stays that of a plain layer and the cost is about three unblocked products. Elsewhere
    the masked weights are materialised in chunks of samples.
    Wan et al. 2013, ICML, "Regularization of Neural Networks using DropConnect".
    """

    chunk_elements = 1 << 24  # masked weight elements materialised at once (off the CPU)

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        p: float = 0.5,
        inference: str = "mean",
        **quantizers: QuantSpec,
    ) -> None:
        if not 0.0 <= p < 1.0:
            raise ValueError(f"DropConnectLinear: p={p} must be in [0, 1)")
        if inference not in ("mean", "moments"):
            raise ValueError(f"DropConnectLinear: inference={inference!r}; use mean or moments")
        super().__init__(in_features, out_features, bias, **quantizers)
        self.p, self.inference = p, inference

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or (not self.training and self.inference == "mean"):
            return super().forward(x)
        op = self._masked_linear if self.training else self._moment_matched
        return self._quantized_forward(x, op, lambda b: b)

    def _moment_matched(self, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """One draw of the Gaussian with the masked sum's mean and variance."""
        mean = F.linear(x, w)
        std = (F.linear(x * x, w * w) * (self.p / (1.0 - self.p))).sqrt()
        y = mean + std * torch.randn_like(mean)
        return y if bias is None else y + bias

    def _masked_linear(self, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        if flat.device.type == "cpu" and flat.dtype == w.dtype == torch.float32:
            seed = int(torch.randint(0, 2**62, (1,)))  # from torch's generator: runs stay reproducible
            y = _MaskedLinear.apply(flat, w, seed, 1.0 - self.p)
        else:
            y = self._materialised(flat, w)
        y = y.reshape(*x.shape[:-1], self.out_features)
        return y if bias is None else y + bias

    def _materialised(self, flat: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        step = max(1, self.chunk_elements // w.numel())
        outputs = []
        for start in range(0, flat.shape[0], step):
            rows = flat[start : start + step]
            keep = torch.rand((rows.shape[0], *w.shape), device=w.device) >= self.p
            masked = w.unsqueeze(0) * keep.to(w.dtype) / (1.0 - self.p)
            outputs.append(torch.bmm(masked, rows.unsqueeze(-1)).squeeze(-1))
        return torch.cat(outputs)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, p={self.p}, inference={self.inference}"
