"""Ops on real-valued feature maps, for the convolutional networks whose activations are not
signs (BinaryConnect, BWN, DoReFa, ternary weights, a float first layer). As on the binary path,
the packed path keeps maps NHWC and the reference path NCHW, as PyTorch.

- ``conv``: a float convolution (the first layer BWN and DoReFa keep in float), torch's conv2d.
- ``unfolded_conv``: a convolution computed by one of the runtime's linear ops (``inner``:
  sign_weight_linear, codes_linear, ternary_linear, grid_linear, xnor_linear) on the image's
  patches, taken with zero padding (F.unfold). Training pads the *quantized* input with zeros;
  the patches pad the input before the inner op quantizes it, which is the same wherever the
  input quantizer maps 0 to 0 (real, DoReFa and symmetric k-bit inputs). Where it does not, the
  convolution takes off, per position, what the padding's quantized zeros added: q(0) times the
  sum of filter o's weights over the taps on the padding, for a k-bit grid (QNN's 8-bit pixels);
  K alpha_o times the sum of its signs for XNOR-Net, whose sign makes a padded 0 a +1 (K, the
  patch's mean |x| with the padding counted as zeros, is XNOR-Net's box-filtered scale map).
- ``channel_affine``: batch norm on maps, y * scale_c + shift_c.
- ``flatten_maps``: NHWC maps flattened in PyTorch's (C, H, W) order, as the classifier reads.
- ``avgpool``: average pooling of maps (a Bi-Real shortcut's, window = stride).
- ``residual``: Bi-Real's block, two op lists of its own (``branch``: a threshold at 0 giving the
  signs of the real input, the binary layer, pooling, batch norm; ``shortcut``: none, pooling, or
  a 1x1 convolution), summed: the real-valued stream a BNN+ carries around each binary layer.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from qnnlab import kernels
from qnnlab.runtime.ops import Affine, ConvGeometry, Flatten, Op, build, register

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
class UnfoldedConv(_Geometry):
    kind = "unfolded_conv"

    def __init__(self, spec: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        super().__init__(spec, tensors)
        inner = spec.get("inner")
        if not isinstance(inner, dict) or inner.get("op") not in INNER:
            raise ValueError(f"{self.kind} op of layer {self.layer}: its inner op must be one of {sorted(INNER)}")
        self.inner = build(inner, tensors)
        self._padding: dict[tuple[int, int], torch.Tensor] = {}

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        out = super().out_shape(shape)
        if self.inner.out_shape((self.channels * math.prod(self.kernel),)) != (self.out_channels,):
            raise ValueError(
                f"{self.kind} op of layer {self.layer}: its inner op does not have {self.out_channels} outputs"
            )
        return out

    def _apply(self, x: torch.Tensor, path: str) -> torch.Tensor:
        """(B, H', W', O): the inner op's ``path`` on every patch of the NCHW input x."""
        batch, _, height, width = x.shape
        out_h = (height + 2 * self.padding - self.kernel[0]) // self.stride + 1
        out_w = (width + 2 * self.padding - self.kernel[1]) // self.stride + 1
        patches = F.unfold(x.to(torch.float32), self.kernel, padding=self.padding, stride=self.stride)
        rows = patches.transpose(1, 2).reshape(batch * out_h * out_w, -1)
        y = getattr(self.inner, path)(rows)
        if self.padding and self.inner.kind in ("xnor_linear", "grid_linear"):
            y = y - self._padding_term(rows, batch, height, width)
        return y.reshape(batch, out_h, out_w, -1)

    def _padding_term(self, rows: torch.Tensor, batch: int, height: int, width: int) -> torch.Tensor:
        """(B H' W', O): what the inner op's quantizer made of the padding's zeros."""
        inner = self.inner
        if inner.kind == "xnor_linear":
            term = self._padding_sums(height, width, lambda: kernels.unpack(inner.weight, inner.k))
            term = term.repeat(batch, 1) * rows.abs().mean(1, keepdim=True)
            return term if inner.alpha is None else term * inner.alpha
        zero = inner.a_lo + inner.a_step * float(inner.input_codes(torch.zeros(1)))
        weights = lambda: inner.w_lo + inner.w_step * inner.codes.to(torch.float32)  # noqa: E731
        return zero * self._padding_sums(height, width, weights).repeat(batch, 1)

    def _padding_sums(self, height: int, width: int, weights) -> torch.Tensor:
        """(H' W', O): per output position, each filter's weights summed over its taps on the padding."""
        key = (height, width)
        if key not in self._padding:
            inside = F.unfold(
                torch.ones(1, self.channels, height, width), self.kernel, padding=self.padding, stride=self.stride
            )
            self._padding[key] = (1 - inside[0].T) @ weights().T
        return self._padding[key]

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
        return branch.add_(shortcut) if branch is not x else branch + shortcut  # the input stays as it is

    @staticmethod
    def _part(ops: list[Op], x: torch.Tensor, path: str) -> torch.Tensor:
        for op in ops:
            x = getattr(op, path)(x)
        return x

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, "reference")

    def packed(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, "packed")
