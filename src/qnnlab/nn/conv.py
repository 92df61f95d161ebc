"""Quantized convolution."""

from __future__ import annotations

import torch
from torch import nn

from qnnlab.nn.quantized import QuantizedLayer, QuantSpec


class QuantConv2d(nn.Conv2d, QuantizedLayer):
    """y = Q_g( K * conv(Q_i(x), Q_w(W)) + b ): nn.Conv2d with quantized weights and inputs.

    Zero padding is applied after input quantization, as in nn.Conv2d: a padded zero is a real 0
    even when the inputs are +-1 (the binary kernels must reproduce that). K is the input
    quantizer's output scale (XNOR-Net's box-filtered mean |I|). With ``float`` quantizers this
    is exactly ``nn.Conv2d``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        weight_quantizer: QuantSpec = None,
        input_quantizer: QuantSpec = None,
        grad_quantizer: QuantSpec = None,
        update_input_quantizer: QuantSpec = None,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode, device, dtype
        )
        self._set_quantizers(weight_quantizer, input_quantizer, grad_quantizer, update_input_quantizer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._quantized_forward(x, self._conv_forward, lambda b: b.reshape(-1, 1, 1))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self.quant_repr()}"
