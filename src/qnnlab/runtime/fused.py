"""Ops of the packed path fused into single kernel calls (``qnnlab.kernels._fused``):

- ``FusedDense``: a binary MLP's whole op list (flatten, the 8-bit first layer, threshold and
  binary product per layer, the output batch norm) at batch 1, where the op-by-op path spends
  most of its time dispatching a dozen calls, each reading its data cold after other work.
- ``ConvPoolThreshold``: a binary convolution, its max pooling and the next threshold, at any
  batch, without the int32 and float feature maps between them.
- ``PixelConvThreshold``: the first convolution on 8-bit pixels, exact from the integer codes (as
  the MLP's first layer), and the next threshold.

``packed_plan`` replaces each fusable run of ops; the reference path always runs the ops."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from qnnlab import kernels
from qnnlab.runtime import ops as runtime_ops

BATCH_LIMIT = 1  # from batch 2 the op-by-op path, with its int8 GEMM, is faster


class FusedDense:
    def __init__(self, first: runtime_ops.RealLinear, pairs: list[tuple[Any, Any]], affine: Any) -> None:
        """``pairs``: (threshold, binary_linear) per binary layer, the threshold acting on the
        previous layer's output; ``affine``: the output batch norm or None."""
        self.first = first
        n1 = first.weight.shape[0]
        self.w0 = kernels.unpack(first.weight, first.k).to(torch.int8).contiguous().numpy()  # +-1, a byte each
        self.offset0 = ((128 / 127.5 - 1) * first.weight_sum.to(torch.float64)).numpy()
        self.bias0 = _bias(first, n1)
        self.sign0, self.bound0 = kernels.threshold_tables(pairs[0][0].t, pairs[0][0].positive, pairs[0][0].constant)
        layers = [pair[1] for pair in pairs]
        thresholds = [pair[0] for pair in pairs[1:]]  # each binary layer's but the last
        sizes = [layer.weight.shape[0] for layer in layers]
        word_starts = np.cumsum([0] + [layer.weight.numel() for layer in layers])[:-1]
        value_starts = np.cumsum([0] + sizes)[:-1]
        self.shapes = np.array(
            [[n, layer.k, w, v] for n, layer, w, v in zip(sizes, layers, word_starts, value_starts)], dtype=np.int64
        )
        self.words = np.concatenate([layer.weight.reshape(-1).numpy().view(np.uint64) for layer in layers])
        self.biases = np.concatenate([_bias(layer, n) for layer, n in zip(layers, sizes)])
        tables = [kernels.threshold_tables(t.t, t.positive, t.constant) for t in thresholds]
        padding = np.zeros(sizes[-1])  # the last layer has no threshold: its slots are never read
        self.signs = np.concatenate([sign for sign, _ in tables] + [padding])
        self.bounds = np.concatenate([bound for _, bound in tables] + [padding])
        classes = layers[-1].weight.shape[0]
        self.scale = affine.scale.numpy() if affine else np.ones(classes, dtype=np.float32)
        self.shift = affine.shift.numpy() if affine else np.zeros(classes, dtype=np.float32)

    @classmethod
    def match(cls, steps: list[Any]) -> FusedDense | None:
        """The fused form of ``steps`` when they are flatten, real_linear, (rows threshold,
        binary_linear) one or more times, and an optional affine; else None."""
        kinds = [step.kind for step in steps]
        if kinds[:2] != ["flatten", "real_linear"]:
            return None
        rest, affine = (steps[2:-1], steps[-1]) if kinds[-1] == "affine" else (steps[2:], None)
        if not rest or len(rest) % 2:
            return None
        pairs = [(rest[i], rest[i + 1]) for i in range(0, len(rest), 2)]
        if any(t.kind != "threshold" or t.layout != "rows" or b.kind != "binary_linear" for t, b in pairs):
            return None
        return cls(steps[1], pairs, affine)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of x (B, ...) on the 8-bit pixel grid, B <= BATCH_LIMIT."""
        from qnnlab.kernels import _kernels
        from qnnlab.kernels._fused import dense_chain

        _kernels()
        flat = x.reshape(x.shape[0], -1).to(torch.float32).contiguous().numpy()
        out = np.empty((flat.shape[0], len(self.scale)), dtype=np.float32)
        dense_chain(
            flat,
            self.w0,
            self.offset0,
            self.bias0,
            self.sign0,
            self.bound0,
            self.shapes,
            self.words,
            self.biases,
            self.signs,
            self.bounds,
            self.scale,
            self.shift,
            out,
        )
        return torch.from_numpy(out)


def _bias(op: Any, n: int) -> np.ndarray:
    return op.bias.to(torch.float32).numpy() if op.bias is not None else np.zeros(n, dtype=np.float32)


class ConvPoolThreshold:
    """binary_conv [+ maxpool with kernel = stride] + threshold (nhwc) as one kernel call."""

    def __init__(self, conv: runtime_ops.BinaryConv, pool: int, threshold: runtime_ops.Threshold) -> None:
        self.conv, self.pool = conv, pool
        self.bias = _bias(conv, conv.out_channels)
        self.sign, self.bound = kernels.threshold_tables(threshold.t, threshold.positive, threshold.constant)

    @classmethod
    def match(cls, steps: list[Any], i: int) -> tuple[ConvPoolThreshold, int] | None:
        """The fused step starting at ``steps[i]`` and how many ops it replaces, or None."""
        if steps[i].kind != "binary_conv":
            return None
        pool, j = 1, i + 1
        if j < len(steps) and steps[j].kind == "maxpool":
            kernel, stride = steps[j].spec["kernel"], steps[j].spec["stride"]
            if kernel != stride or not isinstance(kernel, int):
                return None
            pool, j = kernel, j + 1
        if j < len(steps) and steps[j].kind == "threshold" and steps[j].layout == "nhwc":
            return cls(steps[i], pool, steps[j]), j + 1 - i
        return None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        from qnnlab.kernels import _kernels, _words_view
        from qnnlab.kernels._fused import conv_pool_threshold

        conv = self.conv
        _, conv_h, conv_w = conv.out_shape((conv.channels, x.shape[1], x.shape[2]))
        out = np.empty((len(x), conv_h // self.pool, conv_w // self.pool, kernels.words(conv.out_channels)), np.uint64)
        _kernels()
        conv_pool_threshold(
            _words_view(x),
            _words_view(conv.transposed),
            conv.channels,
            conv.stride,
            conv.padding,
            self.pool,
            self.bias,
            self.sign,
            self.bound,
            out,
        )
        return torch.from_numpy(out.view(np.int64))


class PixelConvThreshold:
    """real_conv + threshold (nhwc) on the 8-bit pixel grid as one exact kernel call."""

    def __init__(self, conv: runtime_ops.RealConv, threshold: runtime_ops.Threshold) -> None:
        self.conv = conv
        self.filters = conv.filters.permute(2, 3, 1, 0).to(torch.int8).contiguous().numpy()  # (kh, kw, C, O)
        self.bias = _bias(conv, conv.out_channels)
        self.sign, self.bound = kernels.threshold_tables(threshold.t, threshold.positive, threshold.constant)

    @classmethod
    def match(cls, steps: list[Any], i: int) -> tuple[PixelConvThreshold, int] | None:
        nxt = steps[i + 1] if i + 1 < len(steps) else None
        if steps[i].kind == "real_conv" and nxt is not None and nxt.kind == "threshold" and nxt.layout == "nhwc":
            return cls(steps[i], nxt), 2
        return None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        from qnnlab.kernels import _kernels
        from qnnlab.kernels._fused import pixel_conv_threshold

        conv = self.conv
        _, out_h, out_w = conv.out_shape(tuple(x.shape[1:]))
        out = np.empty((len(x), out_h, out_w, kernels.words(conv.out_channels)), np.uint64)
        _kernels()
        pixel_conv_threshold(
            x.to(torch.float32).contiguous().numpy(),
            self.filters,
            conv.stride,
            conv.padding,
            self.bias,
            self.sign,
            self.bound,
            out,
        )
        return torch.from_numpy(out.view(np.int64))


def packed_plan(steps: list[Any], on_pixel_grid: bool) -> list[Any]:
    """The callables the packed path runs: the ops, with fusable runs replaced (the first
    convolution only where inputs are checked to lie on the pixel grid)."""
    plan, i = [], 0
    while i < len(steps):
        fused = ConvPoolThreshold.match(steps, i) or (PixelConvThreshold.match(steps, i) if on_pixel_grid else None)
        if fused:
            plan.append(fused[0])
            i += fused[1]
        else:
            plan.append(steps[i].packed)
            i += 1
    return plan
