"""Ops on real-valued feature maps, for the convolutional networks whose activations are not
plain signs (BinaryConnect, BWN, DoReFa, QNN, XNOR-Net, ternary weights, a float first layer) and
for BNN+'s real stream. As on the binary path, the packed path keeps maps NHWC and the reference
path NCHW, as PyTorch.

- ``conv``: a float convolution (the first layer BWN and DoReFa keep in float), torch's conv2d.
- ``quantized_conv``: a quantized convolution whose weights and input quantizer are those of one
  of the runtime's linear ops (``inner``: sign_weight_linear, codes_linear, ternary_linear,
  grid_linear, xnor_linear), zero padding applied after the input's quantization, as training
  does. XNOR-Net's runs on the binary convolution's register tiles (the input's signs packed
  at 0, then scaled by alpha and the box-filtered mean |x|, K); the others, whose inputs are real
  or k-bit, run torch's conv2d on the unpacked weights: on this CPU their packed form saves
  memory, not time (BinaryConnect's real-input products are float additions).
- ``channel_affine``: batch norm on maps, y * scale_c + shift_c.
- ``flatten_maps``: NHWC maps flattened in PyTorch's (C, H, W) order, as the classifier reads.
- ``avgpool``: average pooling of maps (a Bi-Real shortcut's, window = stride).
- ``residual``: Bi-Real's block, two op lists of its own (``branch``: a threshold at 0 giving the
  signs of the real input, the binary layer, pooling, batch norm; ``shortcut``: none, pooling, or
  a 1x1 convolution), summed: the real-valued stream a BNN+ carries around each binary layer.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
import torch.nn.functional as F

from qnnlab import kernels
from qnnlab.runtime.ops import Affine, BinaryConv, ConvGeometry, Flatten, Op, build, register

INNER = {"sign_weight_linear", "codes_linear", "ternary_linear", "grid_linear", "xnor_linear"}


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
class QuantizedConv(_Geometry):
    kind = "quantized_conv"

    def __init__(self, spec: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        super().__init__(spec, tensors)
        inner = spec.get("inner")
        if not isinstance(inner, dict) or inner.get("op") not in INNER:
            raise ValueError(f"{self.kind} op of layer {self.layer}: its inner op must be one of {sorted(INNER)}")
        self.inner = build(inner, tensors)
        if self.inner.kind == "xnor_linear" and 2 * self.padding > min(self.kernel):
            raise ValueError(
                f"{self.kind} op of layer {self.layer}: XNOR-Net's scale map takes padding <= kernel / 2, "
                f"got padding {self.padding} for a {self.kernel} kernel"
            )

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        out = super().out_shape(shape)
        if self.inner.out_shape((self.channels * math.prod(self.kernel),)) != (self.out_channels,):
            raise ValueError(
                f"{self.kind} op of layer {self.layer}: its inner op does not have {self.out_channels} outputs"
            )
        return out

    @functools.cached_property
    def filters(self) -> torch.Tensor:
        """(O, C, kh, kw) float32: the weights as the layer multiplies them."""
        return self.inner.weight_values().reshape(self.out_channels, self.channels, *self.kernel)

    def _scale_map(self, x: torch.Tensor) -> torch.Tensor:
        """XNOR-Net's K (B, 1, H', W'): the channel mean of |x| (NCHW), box-filtered with zero padding."""
        mean = x.to(torch.float32).abs().mean(1, keepdim=True)
        return F.avg_pool2d(mean, self.kernel, self.stride, self.padding, count_include_pad=True)

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(self.inner.input_values(x), self.filters, None, self.stride, self.padding)
        if self.inner.kind == "xnor_linear":
            y = y * self._scale_map(x)
        return y if self.inner.bias is None else y + self.inner.bias.reshape(-1, 1, 1)

    def packed(self, x: torch.Tensor) -> torch.Tensor:
        if self.inner.kind != "xnor_linear":
            return self.reference(self.nchw(x)).permute(0, 2, 3, 1)
        maps = x.permute(0, 2, 3, 1) if self.first else x
        signs = kernels.threshold_pack_tables(maps.reshape(-1, self.channels), *self._zero_tables)
        y = self._binary.packed(signs.reshape(*maps.shape[:3], -1))  # zero padding adds nothing, as in training
        y = y * self._scale_map(self.nchw(x)).permute(0, 2, 3, 1)
        y = y if self.inner.alpha is None else y * self.inner.alpha
        return y if self.inner.bias is None else y + self.inner.bias

    @functools.cached_property
    def _zero_tables(self) -> tuple:
        """Threshold tables of sign(x) at 0 (sign(0) = +1) for every channel."""
        zeros = torch.zeros(self.channels, dtype=torch.float64)
        return kernels.threshold_tables(zeros, torch.ones(self.channels, dtype=torch.bool), zeros - 1)

    @functools.cached_property
    def _binary(self) -> BinaryConv:
        """The sign filters (the inner op's packed bits) as a binary convolution on channel-packed bits."""
        signs = kernels.unpack(self.inner.weight, self.inner.k).reshape(self.out_channels, self.channels, *self.kernel)
        spec = {**self.spec, "op": "binary_conv", "weight": "w"}
        spec.pop("bias", None)
        return BinaryConv(spec, {"w": kernels.pack_filters(signs)})


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


@register
class FlattenMaps(Flatten):
    kind = "flatten_maps"

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1)

    def packed(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 3, 1, 2).reshape(x.shape[0], -1)


@register
class AvgPool(Op):
    kind = "avgpool"

    def __init__(self, spec: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        super().__init__(spec, tensors)
        self.kernel = self._count("kernel")

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(shape) != 3 or min(shape[1:]) < self.kernel:
            raise ValueError(f"avgpool op of layer {self.layer}: cannot pool {shape} maps by {self.kernel}")
        return (shape[0], shape[1] // self.kernel, shape[2] // self.kernel)

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, self.kernel)

    def packed(self, x: torch.Tensor) -> torch.Tensor:
        return self.reference(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


@register
class Residual(Op):
    kind = "residual"

    def __init__(self, spec: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        super().__init__(spec, tensors)
        self.parts = []
        for key in ("branch", "shortcut"):
            ops = spec.get(key)
            if not isinstance(ops, list) or not all(isinstance(op, dict) for op in ops):
                raise ValueError(f"residual op of layer {self.layer}: its {key} must be a list of ops")
            self.parts.append([build(op, tensors) for op in ops])

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        ends = []
        for part in self.parts:
            out = shape
            for op in part:
                out = op.out_shape(out)
            ends.append(out)
        if ends[0] != ends[1]:
            raise ValueError(f"residual op of layer {self.layer}: its branch gives {ends[0]}, its shortcut {ends[1]}")
        return ends[0]

    def _run(self, x: torch.Tensor, path: str) -> torch.Tensor:
        branch, shortcut = (self._part(part, x, path) for part in self.parts)
        return branch + shortcut

    @staticmethod
    def _part(ops: list[Op], x: torch.Tensor, path: str) -> torch.Tensor:
        for op in ops:
            x = getattr(op, path)(x)
        return x

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, "reference")

    def packed(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, "packed")
