"""Ops on real-valued feature maps, for the convolutional networks whose activations are not
signs (BinaryConnect, BWN, DoReFa, ternary weights, a float first layer). As on the binary path,
the packed path keeps maps NHWC and the reference path NCHW, as PyTorch.

- ``conv``: a float convolution (the first layer BWN and DoReFa keep in float), torch's conv2d.
- ``unfolded_conv``: a convolution computed by one of the runtime's linear ops (``inner``:
  sign_weight_linear, codes_linear, ternary_linear, grid_linear) on the image's patches, taken
  with zero padding (F.unfold). Training pads the *quantized* input with zeros; the patches pad
  the input before the inner op quantizes it, which is the same wherever the input quantizer
  maps 0 to 0 (real, DoReFa and symmetric k-bit inputs): the exporter checks it.
- ``channel_affine``: batch norm on maps, y * scale_c + shift_c.
- ``flatten_maps``: NHWC maps flattened in PyTorch's (C, H, W) order, as the classifier reads.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from qnnlab.runtime.ops import Affine, ConvGeometry, Flatten, build, register

INNER = {"sign_weight_linear", "codes_linear", "ternary_linear", "grid_linear"}


class _Geometry(ConvGeometry):
    """``first``: the op reads the model's input images (NCHW on both paths) rather than the packed
    path's NHWC maps."""

    def __init__(self, spec: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        super().__init__(spec, tensors)
        self.first = spec.get("first") is True

    def nchw(self, x: torch.Tensor) -> torch.Tensor:
        """The packed path's input as NCHW."""
        return x if self.first else x.permute(0, 3, 1, 2)


@register
class Conv(_Geometry):
    kind = "conv"

    def __init__(self, spec: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        super().__init__(spec, tensors)
        self.weight = self._tensor(tensors, "weight", torch.float32)
        self._fits("weight", self.weight, (self.out_channels, self.channels, *self.kernel))
        self._bias_fits(self.out_channels)

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x.to(torch.float32), self.weight, self.bias, self.stride, self.padding)

    def packed(self, x: torch.Tensor) -> torch.Tensor:
        return self.reference(self.nchw(x)).permute(0, 2, 3, 1)


@register
class UnfoldedConv(_Geometry):
    kind = "unfolded_conv"

    def __init__(self, spec: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        super().__init__(spec, tensors)
        inner = spec.get("inner")
        if not isinstance(inner, dict) or inner.get("op") not in INNER:
            raise ValueError(f"{self.kind} op of layer {self.layer}: its inner op must be one of {sorted(INNER)}")
        self.inner = build(inner, tensors)

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        out = super().out_shape(shape)
        if self.inner.out_shape((self.channels * math.prod(self.kernel),)) != (self.out_channels,):
            raise ValueError(f"{self.kind} op of layer {self.layer}: its inner op has not {self.out_channels} outputs")
        return out

    def _apply(self, x: torch.Tensor, path: str) -> torch.Tensor:
        """(B, H', W', O): the inner op's ``path`` on every patch of the NCHW input x."""
        batch, _, height, width = x.shape
        out_h = (height + 2 * self.padding - self.kernel[0]) // self.stride + 1
        out_w = (width + 2 * self.padding - self.kernel[1]) // self.stride + 1
        patches = F.unfold(x.to(torch.float32), self.kernel, padding=self.padding, stride=self.stride)
        rows = patches.transpose(1, 2).reshape(batch * out_h * out_w, -1)
        return getattr(self.inner, path)(rows).reshape(batch, out_h, out_w, -1)

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        return self._apply(x, "reference").permute(0, 3, 1, 2)

    def packed(self, x: torch.Tensor) -> torch.Tensor:
        return self._apply(self.nchw(x), "packed")


@register
class ChannelAffine(Affine):
    kind = "channel_affine"

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(shape) != 3:
            raise ValueError(f"{self.kind} op of layer {self.layer} takes (C, H, W) maps, got {shape}")
        self._fits("scale", self.scale, shape[:1])
        self._fits("shift", self.shift, shape[:1])
        return shape

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.reshape(-1, 1, 1) + self.shift.reshape(-1, 1, 1)

    def packed(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


@register
class FlattenMaps(Flatten):
    kind = "flatten_maps"

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1)

    def packed(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 3, 1, 2).reshape(x.shape[0], -1)
