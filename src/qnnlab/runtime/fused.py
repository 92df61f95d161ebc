"""Ops of the packed path fused into single kernel calls (``qnnlab.kernels._fused``, ``_fused_conv``):

- ``FusedDense``: a binary MLP's whole op list (flatten, the 8-bit first layer, threshold and
  binary product per layer, the output batch norm) at batch 1, where the op-by-op path spends
  most of its time dispatching a dozen calls, each reading its data cold after other work.
- ``FusedCNN``: the same for a binary CNN's fused plan at batch 1.
- ``ConvPoolThreshold``: a binary convolution, its max pooling and the next threshold, at any
  batch, without the int32 and float feature maps between them.
- ``PixelConvThreshold``: the first convolution on 8-bit pixels, exact from the integer codes (as
  the MLP's first layer), and the next threshold.
- ``PixelConv``: the same first convolution where its output stays real (BNN+), with its batch norm.
- ``PixelLinearThreshold``: the MLP's 8-bit first layer at a batch with its threshold, on VNNI
  register tiles where the CPU has them, else torch's int8 GEMM and one pass to packed bits.
- ``PixelLinear``: the same first layer where its output stays real (BNN+), without the threshold.
- ``ResidualDense``: a Bi-Real block of a binary MLP (BNN+), the binary product, batch norm and
  sum with the real stream per register tile.
- ``ResidualConv``: a Bi-Real block of a binary CNN (BNN+), its convolution, pooling, batch norm
  and shortcut per output row.
- ``FusedDenseBatch``: with VNNI, a binary MLP at a batch as one call (first layer, binary layers).
- ``BinaryTail``: the binary layers that end a model, as one call.

``packed_plan`` replaces each fusable run of ops; the reference path always runs the ops. The
steps but the two whole-model forms are ``ArrayStep``s: the plan hands numpy arrays from one to
the next."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from qnnlab import kernels
from qnnlab.runtime import ops as runtime_ops

BATCH_LIMIT = 1  # FusedDense and FusedCNN: from batch 2 the blocked products of a batch are faster


class ArrayStep:
    """A fused step that takes numpy arrays as well as tensors and returns what it took (``_like``):
    the plan hands arrays from one such step to the next, with no torch call between their kernels.
    Once a kernel has run, torch's code is out of the caches and each torch call costs
    microseconds, a large share of a small call."""


class BinaryChain:
    """The tables of a run of binary layers as flat buffers for one kernel call: per layer (N, K,
    offset of its packed words, offset of its N values (padded to whole 64-entry words), offset of
    its panels), the packed weights as rows and in the register-tile layout (``kernels._panels``),
    biases and the threshold tables between layers, and the output batch norm (identity without one)."""

    def __init__(self, layers: list[Any], thresholds: list[Any], affine: Any) -> None:
        from qnnlab.kernels import _panels  # numba compiles on first use, not at import

        sizes = [layer.weight.shape[0] for layer in layers]
        padded = [kernels.words(n) * 64 for n in sizes]  # each layer's values in whole words: read 64 at a time
        word_starts = np.cumsum([0] + [layer.weight.numel() for layer in layers])[:-1]
        value_starts = np.cumsum([0] + padded)[:-1]
        panels = [_panels.panels(layer.weight.numpy().view(np.uint64)).reshape(-1) for layer in layers]
        panel_starts = np.cumsum([0] + [len(p) for p in panels])[:-1]
        self.shapes = np.array(
            [
                [n, layer.k, w, v, p]
                for n, layer, w, v, p in zip(sizes, layers, word_starts, value_starts, panel_starts)
            ],
            dtype=np.int64,
        )
        self.words = np.concatenate([layer.weight.reshape(-1).numpy().view(np.uint64) for layer in layers])
        self.panels = np.concatenate(panels)
        self.biases = np.concatenate([_padded(_bias(layer, n), m) for layer, n, m in zip(layers, sizes, padded)])
        ranges = [product_ranges(_bias(layer, n), t, layer.k) for layer, t, n in zip(layers, thresholds, sizes)]
        last = np.zeros(padded[-1], dtype=np.int32)  # the last layer has no threshold: its slots are never read
        self.lows = np.concatenate([low for low, _ in ranges] + [last])
        self.highs = np.concatenate([high for _, high in ranges] + [last])
        self.scale = affine.scale.numpy() if affine else np.ones(sizes[-1], dtype=np.float32)
        self.shift = affine.shift.numpy() if affine else np.zeros(sizes[-1], dtype=np.float32)

    def tables(self) -> tuple[np.ndarray, ...]:
        return self.shapes, self.words, self.panels, self.biases, self.lows, self.highs, self.scale, self.shift

    @staticmethod
    def split(steps: list[Any]) -> tuple[list[Any], list[Any], Any] | None:
        """(binary layers, thresholds between them, affine or None) when ``steps`` are
        binary_linear, (rows threshold, binary_linear)*, [affine]; else None."""
        kinds = [step.kind for step in steps]
        body, affine = (steps[:-1], steps[-1]) if kinds and kinds[-1] == "affine" else (steps, None)
        if not body or len(body) % 2 == 0:
            return None
        layers, thresholds = body[0::2], body[1::2]
        if any(layer.kind != "binary_linear" for layer in layers) or any(
            t.kind != "threshold" or t.layout != "rows" for t in thresholds
        ):
            return None
        return layers, thresholds, affine


def product_ranges(bias: np.ndarray, threshold: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``threshold_ranges`` of a threshold op over the binary products p in [-k, k] of the units
    it thresholds, y = float32(p) + bias (one bias per unit), padded to whole words."""
    sign, bound = kernels.threshold_tables(threshold.t, threshold.positive, threshold.constant)
    size = kernels.words(len(sign)) * 64
    bias, sign, bound = (_padded(v, size) for v in (bias, sign, bound))
    return threshold_ranges(lambda p: p.astype(np.float32) + bias, sign, bound, -k, k, len(threshold.t))


class FusedDense:
    def __init__(self, first: runtime_ops.RealLinear, threshold: Any, chain: BinaryChain) -> None:
        """``first``: the 8-bit first layer; ``threshold``: its outputs' threshold; ``chain``: the
        binary layers after it."""
        self.first, self.chain = first, chain
        self.w0 = first.weight.contiguous().numpy().view(np.uint64)  # packed +-1, tail bits clear
        self.offset0 = first.offset().numpy()
        self.bias0 = _bias(first, first.weight.shape[0])
        self.sign0, self.bound0 = kernels.threshold_tables(threshold.t, threshold.positive, threshold.constant)

    @classmethod
    def match(cls, steps: list[Any]) -> FusedDense | None:
        """The fused form of ``steps`` when they are flatten, real_linear, rows threshold and a
        binary chain (``BinaryChain.split``); else None."""
        kinds = [step.kind for step in steps]
        if kinds[:3] != ["flatten", "real_linear", "threshold"] or steps[2].layout != "rows":
            return None
        parts = BinaryChain.split(steps[3:])
        return cls(steps[1], steps[2], BinaryChain(*parts)) if parts else None

    def __call__(self, values: np.ndarray) -> torch.Tensor:
        """Logits of images ``values`` (B, ...) float32 on the 8-bit pixel grid, B <= BATCH_LIMIT."""
        from qnnlab.kernels._fused import dense_chain

        flat = values.reshape(len(values), -1)
        out = np.empty((flat.shape[0], len(self.chain.scale)), dtype=np.float32)
        kernels.launch(
            dense_chain, flat, self.w0, self.offset0, self.bias0, self.sign0, self.bound0, *self.chain.tables(), out
        )
        return torch.from_numpy(out)


class BinaryTail(ArrayStep):
    """The binary layers that end a model (a CNN's classifier, an MLP after its first layer) in
    one call: one sample on the calling thread, a batch as the blocked products of the whole
    batch per layer (``_fused.binary_tail_batch``), which read each weight once."""

    def __init__(self, chain: BinaryChain) -> None:
        self.chain = chain

    @classmethod
    def match(cls, steps: list[Any], i: int) -> tuple[BinaryTail, int] | None:
        parts = BinaryChain.split(steps[i:])
        return (cls(BinaryChain(*parts)), len(steps) - i) if parts else None

    def __call__(self, packed: torch.Tensor) -> torch.Tensor:
        from qnnlab.kernels._fused import binary_tail_batch, binary_tail_serial

        out = np.empty((packed.shape[0], len(self.chain.scale)), dtype=np.float32)
        kernel = binary_tail_serial if packed.shape[0] == 1 else binary_tail_batch
        kernels.launch(kernel, _words(packed), *self.chain.tables(), out)
        return _like(packed, out)


def _bias(op: Any, n: int) -> np.ndarray:
    return op.bias.to(torch.float32).numpy() if op.bias is not None else np.zeros(n, dtype=np.float32)


class ConvPoolThreshold(ArrayStep):
    """binary_conv [+ maxpool with kernel = stride] + threshold (nhwc, or flat before the
    classifier) as one kernel call."""

    def __init__(self, conv: runtime_ops.BinaryConv, pool: int, threshold: runtime_ops.Threshold) -> None:
        self.conv, self.pool, self.flat = conv, pool, threshold.layout == "flat"
        self.panels, self.corrections = conv.panels, conv.corrections
        bias = _bias(conv, conv.out_channels)  # per channel; when flat, per feature in (C, H, W) order
        bias = np.repeat(bias, len(threshold.t) // len(bias))
        self.low, self.high = product_ranges(bias, threshold, int(np.prod(conv.kernel)) * conv.channels)

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
        if j < len(steps) and steps[j].kind == "threshold" and steps[j].layout in ("nhwc", "flat"):
            return cls(steps[i], pool, steps[j]), j + 1 - i
        return None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        from qnnlab.kernels import _fused_conv as fc

        conv = self.conv
        if x.ndim != 4 or x.shape[3] != kernels.words(conv.channels):
            raise ValueError(f"layer {conv.layer}: expected channel-packed bits, got {tuple(x.shape)}")
        _, conv_h, conv_w = conv.out_shape((conv.channels, x.shape[1], x.shape[2]))
        pooled = (conv.out_channels, conv_h // self.pool, conv_w // self.pool)
        if self.flat:
            out = np.empty((len(x), kernels.words(pooled[0] * pooled[1] * pooled[2])), np.uint64)
        else:
            out = np.empty((len(x), pooled[1], pooled[2], kernels.words(conv.out_channels)), np.uint64)
        if self.flat:
            kernel = fc.conv_pool_threshold_flat_serial if len(x) == 1 else fc.conv_pool_threshold_flat
        else:
            kernel = fc.conv_pool_threshold_serial if len(x) == 1 else fc.conv_pool_threshold
        kernels.launch(
            kernel,
            _words(x),
            self.panels,
            self.corrections,
            conv.channels,
            conv.stride,
            conv.padding,
            self.pool,
            self.low,
            self.high,
            out,
        )
        return _like(x, out.view(np.int64))


class _PixelFilters(ArrayStep):
    """A first convolution's filters (a real_conv's +-1, a float conv's real values) as float32
    panels of ``_float_tiles.COLUMNS`` output channels (taps in (dy, dx, c) order) for the kernels
    on 8-bit pixel codes, and the classes of output positions by which of their window's taps lie
    inside the image (along each border, and the inside), each with its own sum of the filters
    over those taps."""

    def __init__(self, conv: Any) -> None:
        from qnnlab.kernels._float_tiles import COLUMNS

        self.conv = conv
        filters = _filters(conv).permute(2, 3, 1, 0).to(torch.float64)  # (kh, kw, C, O)
        self.tap_sums = filters.sum(2).contiguous().numpy()
        kh, kw, channels, n_out = filters.shape
        padded = -(-n_out // COLUMNS) * COLUMNS
        columns = torch.zeros(kh * kw * channels, padded, dtype=torch.float32)
        columns[:, :n_out] = filters.reshape(-1, n_out)
        self.panels = columns.reshape(-1, padded // COLUMNS, COLUMNS).transpose(0, 1).contiguous().numpy()
        self.bias, self.padded = _bias(conv, n_out), padded
        self._tables: dict[tuple[int, int], tuple[np.ndarray, ...]] = {}

    @staticmethod
    def exact(conv: Any) -> bool:
        """Whether float32 holds every sum of codes times weights of one output exactly."""
        return conv.kind == "real_conv" and conv.filters[0].numel() * 255 < runtime_ops.FLOAT32_EXACT

    def classes(self, height: int, width: int) -> tuple[np.ndarray, np.ndarray, list[list[np.ndarray]], int]:
        """(row_class, col_class, the filters' sums over each pair of classes' taps inside the
        image (padded to whole panels), the largest |sum of codes times weights| of a class)."""
        kh, kw = self.conv.kernel
        row_class, row_taps = _window_classes(kh, height, self.conv.stride, self.conv.padding)
        col_class, col_taps = _window_classes(kw, width, self.conv.stride, self.conv.padding)
        inside = [
            [_padded(self.tap_sums[top:bottom, left:right].sum((0, 1)), self.padded) for left, right in col_taps]
            for top, bottom in row_taps
        ]
        return row_class, col_class, inside, 255 * kh * kw * self.conv.channels

    def _launch(self, kernel, x: torch.Tensor, tables: tuple[np.ndarray, ...], out: np.ndarray) -> np.ndarray:
        conv = self.conv
        kernels.launch(
            kernel,
            _floats(x),
            self.panels,
            conv.kernel,
            conv.stride,
            conv.padding,
            *tables,
            out,
        )
        return out


class PixelConvThreshold(_PixelFilters):
    """real_conv + threshold (nhwc) on the 8-bit pixel grid as one exact kernel call, every pixel
    thresholded on its integer sum of codes times weights."""

    def __init__(self, conv: runtime_ops.RealConv, threshold: runtime_ops.Threshold) -> None:
        super().__init__(conv)
        self.sign, self.bound = kernels.threshold_tables(threshold.t, threshold.positive, threshold.constant)

    def ranges(self, height: int, width: int) -> tuple[np.ndarray, ...]:
        """(row_class, col_class, low, high) for (height, width) images: each pair of classes has its
        own arithmetic, value = float32(s / 127.5 - the filters' sum over its taps) + bias for the
        integer sum s of codes times weights, so its own ranges of s in which each channel fires
        (float32, as the kernel's sums are)."""
        if (height, width) not in self._tables:
            row_class, col_class, inside, most = self.classes(height, width)
            low = np.empty((len(inside), len(inside[0]), self.padded), dtype=np.float32)
            high = np.empty_like(low)
            sign, bound, bias = (_padded(v, self.padded) for v in (self.sign, self.bound, self.bias))
            for r, row in enumerate(inside):
                for c, taps in enumerate(row):

                    def values(s: np.ndarray, taps: np.ndarray = taps) -> np.ndarray:  # the ops' arithmetic
                        return (s.astype(np.float64) * (1 / 127.5) - taps).astype(np.float32) + bias

                    low[r, c], high[r, c] = threshold_ranges(values, sign, bound, -most, most, self.tap_sums.shape[2])
            self._tables[height, width] = (row_class, col_class, low, high)
        return self._tables[height, width]

    @classmethod
    def match(cls, steps: list[Any], i: int) -> tuple[PixelConvThreshold, int] | None:
        nxt = steps[i + 1] if i + 1 < len(steps) else None
        if steps[i].kind == "real_conv" and nxt is not None and nxt.kind == "threshold" and nxt.layout == "nhwc":
            return (cls(steps[i], nxt), 2) if cls.exact(steps[i]) else None
        return None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        from qnnlab.kernels._fused_conv import pixel_conv_threshold, pixel_conv_threshold_serial

        _, out_h, out_w = self.conv.out_shape(tuple(x.shape[1:]))
        out = np.empty((len(x), out_h, out_w, kernels.words(self.conv.out_channels)), np.uint64)
        kernel = pixel_conv_threshold_serial if len(x) == 1 else pixel_conv_threshold
        return _like(x, self._launch(kernel, x, self.ranges(x.shape[2], x.shape[3]), out).view(np.int64))


class PixelConv(_PixelFilters):
    """real_conv on the 8-bit pixel grid whose output stays real (BNN+'s stream begins there), with
    the batch norm (channel_affine) after it if there is one, as one kernel call: each value from
    the exact integer sum of codes times weights, as ``PixelConvThreshold`` computes it, where the
    ops run a float32 GEMM on im2col patches and a pass for the batch norm. A float first
    convolution (a real-valued first layer) runs the same kernel, its sums of codes times float
    weights in float32 (within rounding of torch's conv2d, as two float convolutions are)."""

    def __init__(self, conv: runtime_ops.RealConv, affine: Any = None) -> None:
        super().__init__(conv)
        n_out = conv.out_channels
        self.scale = affine.scale.numpy() if affine else np.ones(n_out, dtype=np.float32)
        self.shift = affine.shift.numpy() if affine else np.zeros(n_out, dtype=np.float32)

    @classmethod
    def match(cls, steps: list[Any], i: int) -> tuple[PixelConv, int] | None:
        nxt = steps[i + 1] if i + 1 < len(steps) else None
        first_float = steps[i].kind == "conv" and steps[i].first
        if not (cls.exact(steps[i]) or first_float) or (nxt is not None and nxt.kind == "threshold"):
            return None
        return (cls(steps[i], nxt), 2) if nxt is not None and nxt.kind == "channel_affine" else (cls(steps[i]), 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        from qnnlab.kernels._fused_conv import pixel_conv_values, pixel_conv_values_serial

        height, width = x.shape[2], x.shape[3]
        _, out_h, out_w = self.conv.out_shape(tuple(x.shape[1:]))
        if (height, width) not in self._tables:
            row_class, col_class, inside, _ = self.classes(height, width)
            self._tables[height, width] = (row_class, col_class, np.array(inside, dtype=np.float64))
        tables = (*self._tables[height, width], self.bias, self.scale, self.shift)
        out = np.empty((len(x), out_h, out_w, self.conv.out_channels), np.float32)
        kernel = pixel_conv_values_serial if kernels.parallel_threads() == 1 else pixel_conv_values
        return _like(x, self._launch(kernel, x, tables, out))


def _filters(conv: Any) -> torch.Tensor:
    """(O, C, kh, kw) float: a real_conv's +-1 filters, a float conv's weights."""
    return conv.filters if conv.kind == "real_conv" else conv.weight


def _window_classes(size: int, extent: int, stride: int, padding: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """For each output position along one axis, the index of its class, and each class's taps
    [first, stop) inside an input of ``extent`` (a window of ``size`` taps)."""
    positions = (extent + 2 * padding - size) // stride + 1
    taps = [
        (max(0, -start), min(size, extent - start)) for start in range(-padding, positions * stride - padding, stride)
    ]
    classes = sorted(set(taps))
    return np.array([classes.index(t) for t in taps], dtype=np.int64), classes


class PixelLinearThreshold(ArrayStep):
    """real_linear + threshold (rows) on the 8-bit pixel grid: the exact centred sums, then bias,
    threshold and packing in one kernel call, with the ops' arithmetic. The product runs on VNNI
    register tiles where the CPU has them (``kernels._int8_tiles``: ``panels`` is set), and from
    ``kernels._amx.FROM_BATCH`` samples on AMX tiles where it has those too (``kernels._amx``),
    else as the layer's int8 GEMM in torch followed by ``_fused.centred_threshold``."""

    def __init__(self, linear: runtime_ops.RealLinear, threshold: runtime_ops.Threshold) -> None:
        self.linear = linear
        self.units, k = linear.weight.shape[0], linear.k
        size = kernels.words(self.units) * 64
        sign, bound = kernels.threshold_tables(threshold.t, threshold.positive, threshold.constant)
        self.offset = _padded(linear.offset().numpy(), size)
        self.bias, self.sign, self.bound = (_padded(v, size) for v in (_bias(linear, self.units), sign, bound))
        self.panels, shifts, self.amx_from = _int8_tiles_for(linear, size)
        self.ranges: tuple[np.ndarray, np.ndarray] | None = None
        if self.panels is not None:
            self.ranges = code_ranges(
                shifts.astype(np.float64), self.offset, self.bias, self.sign, self.bound, k, self.units
            )

    @classmethod
    def match(cls, steps: list[Any], i: int) -> tuple[PixelLinearThreshold, int] | None:
        nxt = steps[i + 1] if i + 1 < len(steps) else None
        if steps[i].kind == "real_linear" and nxt is not None and nxt.kind == "threshold" and nxt.layout == "rows":
            return cls(steps[i], nxt), 2
        return None

    def tables(self) -> tuple[Any, ...]:
        """The VNNI path's arguments after x (``_fused.pixel_dense_threshold``)."""
        return self.panels, *self.ranges

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        from qnnlab.kernels._fused import centred_threshold, pixel_dense_threshold, pixel_dense_threshold_amx

        out = np.empty((len(x), kernels.words(self.units)), np.uint64)
        if x.shape[1] != self.linear.k:
            raise ValueError(f"layer {self.linear.layer} takes {self.linear.k} features, got {tuple(x.shape)}")
        if self.panels is not None:
            kernel = pixel_dense_threshold_amx if len(x) >= self.amx_from else pixel_dense_threshold
            kernels.launch(kernel, _floats(x), *self.tables(), out)
        else:
            codes = ((torch.as_tensor(x).to(torch.float32) + 1) * 127.5).round()
            sums = self.linear.centred_sums(codes).to(torch.int32).contiguous().numpy()
            kernels.launch(centred_threshold, sums, self.offset, self.bias, self.sign, self.bound, out)
        return _like(x, out.view(np.int64))


class PixelLinear(ArrayStep):
    """real_linear on the 8-bit pixel grid whose output stays real (no threshold follows: BNN+'s
    real stream begins there), with the batch norm (affine) after it if there is one: the ops'
    values from its exact centred sums, at batch 1 by masked additions on the packed weights
    (``_fused.pixel_dense_values_serial``), at a batch on VNNI register tiles or AMX tiles where
    the CPU has them (``_fused.pixel_dense_values``, ``pixel_dense_values_amx``), else the ops
    themselves."""

    def __init__(self, linear: runtime_ops.RealLinear, affine: Any = None) -> None:
        self.linear, self.affine = linear, affine
        units = linear.weight.shape[0]
        self.w0 = linear.weight.contiguous().numpy().view(np.uint64)  # packed +-1, tail bits clear
        self.offset, self.bias = linear.offset().numpy(), _bias(linear, units)
        self.scale = affine.scale.numpy() if affine else np.ones(units, dtype=np.float32)
        self.shift = affine.shift.numpy() if affine else np.zeros(units, dtype=np.float32)
        self.panels, self.shifts, self.amx_from = _int8_tiles_for(linear, kernels.words(units) * 64)

    @classmethod
    def match(cls, steps: list[Any], i: int) -> tuple[PixelLinear, int] | None:
        nxt = steps[i + 1] if i + 1 < len(steps) else None
        if steps[i].kind != "real_linear" or (nxt is not None and nxt.kind == "threshold"):
            return None
        return (cls(steps[i], nxt), 2) if nxt is not None and nxt.kind == "affine" else (cls(steps[i]), 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        from qnnlab.kernels._fused import pixel_dense_values, pixel_dense_values_amx, pixel_dense_values_serial

        if x.ndim != 2 or x.shape[1] != self.linear.k:
            raise ValueError(f"layer {self.linear.layer} takes {self.linear.k} features, got {tuple(x.shape)}")
        if len(x) > 1 and self.panels is None:
            y = self.linear.packed(torch.as_tensor(x))
            return self.affine.packed(y) if self.affine else y
        out = np.empty((len(x), len(self.bias)), np.float32)
        values = _floats(x)
        tables = self.offset, self.bias, self.scale, self.shift
        if len(out) == 1:
            kernels.launch(pixel_dense_values_serial, values, self.w0, *tables, out)
        else:
            kernel = pixel_dense_values_amx if len(out) >= self.amx_from else pixel_dense_values
            kernels.launch(kernel, values, self.panels, self.shifts, *tables, out)
        return _like(x, out)


def _int8_tiles_for(linear: runtime_ops.RealLinear, size: int) -> tuple[np.ndarray | None, np.ndarray | None, float]:
    """What an 8-bit first layer needs for its products on register tiles: the VNNI panels and
    shifts of ``_int8_panels`` (None, None where the CPU has no VNNI tiles), K padded to whole AMX
    tile rows where it has AMX too, and the smallest batch that runs on AMX (infinite without)."""
    from qnnlab.kernels import _amx, _int8_tiles

    if not _int8_tiles.available():
        return None, None, math.inf
    if not _amx.available():
        return *_int8_panels(linear.weight, linear.k, size), math.inf
    return *_int8_panels(linear.weight, linear.k, size, _amx.CHUNK), _amx.FROM_BATCH


def _int8_panels(weight: torch.Tensor, k: int, size: int, chunk: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Packed +-1 weights (N, W) as VNNI panels (P, groups, 64, 4) int8: panel p, group g, column j,
    code q = w[64 p + j, 4 g + q], units padded to ``size`` and K to whole ``chunk`` codes (groups
    for VNNI, AMX tile rows) with zeros; and per unit 128 sum(w) (int64), which centres sums of
    unsigned pixel codes."""
    from qnnlab.kernels import _int8_tiles

    groups = -(-k // chunk) * chunk // _int8_tiles.GROUP
    weights = torch.zeros(size, groups * _int8_tiles.GROUP, dtype=torch.int8)
    weights[: weight.shape[0], :k] = kernels.unpack(weight, k).to(torch.int8)
    panels = weights.reshape(-1, 64, groups, _int8_tiles.GROUP).permute(0, 2, 1, 3).contiguous().numpy()
    return panels, 128 * weights.sum(1, dtype=torch.int64).numpy()


class ResidualDense(ArrayStep):
    """A Bi-Real block of a binary MLP (``residual``: threshold at 0, binary_linear, affine; no
    shortcut op) as one kernel call, the signs of the real stream packed, then the binary
    product, batch norm and sum per register tile (``_fused.residual_dense_block``), where the
    ops make five passes over (B, N) tensors."""

    def __init__(self, block: Any) -> None:
        threshold, self.linear, affine = block.parts[0]
        self.tables = kernels.threshold_tables(threshold.t, threshold.positive, threshold.constant)
        units = self.linear.weight.shape[0]
        self.panels = self.linear.panels.numpy().view(np.uint64)
        self.bias = _bias(self.linear, units)
        self.scale, self.shift = affine.scale.numpy(), affine.shift.numpy()  # float32 (the op's tables)

    @classmethod
    def match(cls, steps: list[Any], i: int) -> tuple[ResidualDense, int] | None:
        if steps[i].kind != "residual" or steps[i].parts[1]:
            return None
        kinds = [op.kind for op in steps[i].parts[0]]
        if kinds == ["threshold", "binary_linear", "affine"] and steps[i].parts[0][0].layout == "rows":
            return cls(steps[i]), 1
        return None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        from qnnlab.kernels._fused import residual_dense_block

        if x.ndim != 2 or x.shape[1] != self.linear.k:
            raise ValueError(f"layer {self.linear.layer} takes {self.linear.k} features, got {tuple(x.shape)}")
        out = np.empty((len(x), len(self.bias)), np.float32)
        tables = self.panels, self.linear.k, self.bias, self.scale, self.shift
        kernels.launch(residual_dense_block, _floats(x), self.tables, *tables, out)
        return _like(x, out)


class ResidualConv(ArrayStep):
    """A Bi-Real block of a binary CNN (BNN+; ``residual``: threshold at 0, binary_conv, maxpool or
    none, channel_affine; shortcut none, avgpool, or threshold, binary_conv, channel_affine) as the
    one kernel call (``_fused_conv.residual_block``) that packs the signs of the real stream and
    writes the block's output row by row, where the ops make seven passes over float feature maps."""

    def __init__(self, block: Any, pool: int, shortcut: list[Any]) -> None:
        threshold, self.conv, *_, affine = block.parts[0]
        self.pool, self.block = pool, block
        self._sizes: dict[tuple[int, int], tuple[int, int]] = {}
        self.tables = kernels.threshold_tables(threshold.t, threshold.positive, threshold.constant)
        self.reach = shortcut[0].kernel if [op.kind for op in shortcut] == ["avgpool"] else 1
        self.branch = (*self._geometry(self.conv), pool, *_conv_tables(self.conv, affine))
        self.short = None
        if len(shortcut) == 3:
            s_threshold, short_conv, s_affine = shortcut
            self.short_tables = kernels.threshold_tables(s_threshold.t, s_threshold.positive, s_threshold.constant)
            self.short = (*self._geometry(short_conv), 1, *_conv_tables(short_conv, s_affine))

    @classmethod
    def match(cls, steps: list[Any], i: int) -> tuple[ResidualConv, int] | None:
        if steps[i].kind != "residual":
            return None
        branch, shortcut = steps[i].parts
        kinds = [op.kind for op in branch]
        pool = 1
        if kinds[2:3] == ["maxpool"]:
            kernel, stride = branch[2].spec["kernel"], branch[2].spec["stride"]
            if kernel != stride or not isinstance(kernel, int):
                return None
            pool, kinds = kernel, kinds[:2] + kinds[3:]
        if kinds != ["threshold", "binary_conv", "channel_affine"] or branch[0].layout != "nhwc":
            return None
        short = [op.kind for op in shortcut]
        if short in ([], ["avgpool"]) or (
            short == ["threshold", "binary_conv", "channel_affine"] and shortcut[0].layout == "nhwc"
        ):
            return cls(steps[i], pool, shortcut), 1
        return None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        from qnnlab.kernels import _fused_conv as fc

        conv = self.conv
        if x.ndim != 4 or x.shape[3] != conv.channels:
            raise ValueError(
                f"layer {self.block.layer}: expected (B, H, W, {conv.channels}) maps, got {tuple(x.shape)}"
            )
        size = (x.shape[1], x.shape[2])
        if size not in self._sizes:  # the ops' checks, once per input size
            self._sizes[size] = self.block.out_shape((conv.channels, *size))[1:]
        height, width = self._sizes[size]
        stream = _floats(x)
        out = np.empty((len(x), height, width, conv.out_channels), np.float32)
        serial = kernels.parallel_threads() == 1  # one image's rows are worth splitting across threads
        if self.short is None:
            kernels.launch(fc.residual_block, self.branch, self.tables, stream, self.reach, out, serial)
        else:
            kernels.launch(
                fc.residual_block_shortcut, self.branch, self.tables, self.short, self.short_tables, stream, out, serial
            )
        return _like(x, out)

    @staticmethod
    def _geometry(conv: Any) -> tuple[Any, ...]:
        return conv.panels, conv.corrections, conv.channels, conv.stride, conv.padding


def _conv_tables(conv: Any, affine: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A binary convolution's bias (padded to whole words) and the batch norm after it, float32."""
    return _bias(conv, conv.out_channels), affine.scale.numpy(), affine.shift.numpy()


def threshold_ranges(values, sign, bound, smallest: int, largest: int, units: int) -> tuple[np.ndarray, np.ndarray]:
    """Per unit, the range [low, high] of the integer sums s in [smallest, largest] for which its
    threshold fires, bit = (sign values(s) >= bound), where ``values`` maps an array of sums (one
    per unit) to the float32 values the ops compute from them. Each step of that arithmetic
    rounds monotonically, so the bit is a step in s: on from some sum up where sign > 0, up to
    some sum where sign < 0, found by binary search. Units from ``units`` on (padding) and
    units that never fire get an empty range (low > high). Thresholding integer sums against
    these is exact: no float arithmetic after the product."""

    def fires(s: np.ndarray) -> np.ndarray:
        return values(s).astype(np.float64) * sign >= bound

    lowest, highest = np.full(len(sign), smallest, dtype=np.int64), np.full(len(sign), largest, dtype=np.int64)
    steps = int(np.ceil(np.log2(largest - smallest + 1))) + 1
    rising, falling = fires(highest), fires(lowest)
    low, high = lowest.copy(), highest.copy()
    for _ in range(steps):  # rising units: low -> the first sum that fires
        mid = (low + high) // 2
        on = fires(mid)
        high, low = np.where(rising & on, mid, high), np.where(rising & ~on, mid + 1, low)
    first = np.where(rising, low, lowest)
    falling &= ~rising
    low, high = lowest.copy(), highest.copy()
    for _ in range(steps):  # falling units: high -> the last sum that fires
        mid = (low + high + 1) // 2
        on = fires(mid)
        low, high = np.where(falling & on, mid, low), np.where(falling & ~on, mid - 1, high)
    last = np.where(falling, high, highest)
    never = ~rising & ~falling
    never[units:] = True
    return np.where(never, 1, first).astype(np.int32), np.where(never, 0, last).astype(np.int32)


def code_ranges(shifts, offset, bias, sign, bound, k: int, units: int) -> tuple[np.ndarray, np.ndarray]:
    """``threshold_ranges`` of the 8-bit first layer over the sums s = c . w of K pixel codes c
    (0..255) against +-1 weights: y = float32((s - shift) / 127.5 + offset) + bias."""

    def values(s: np.ndarray) -> np.ndarray:
        return ((s.astype(np.float64) - shifts) / 127.5 + offset).astype(np.float32) + bias.astype(np.float32)

    return threshold_ranges(values, sign, bound, -255 * k, 255 * k, units)


class FusedDenseBatch:
    """A binary MLP's plan (flatten, ``PixelLinearThreshold`` on VNNI or AMX tiles, ``BinaryTail``)
    as one kernel call for a batch (``_fused.dense_batch``, ``_fused.dense_batch_amx``)."""

    def __init__(self, first: PixelLinearThreshold, tail: BinaryTail) -> None:
        self.first, self.tail = first, tail

    @classmethod
    def match(cls, steps: list[Any], plan: list[Any]) -> FusedDenseBatch | None:
        if (
            len(plan) == 3
            and steps[0].kind == "flatten"
            and isinstance(plan[1], PixelLinearThreshold)
            and plan[1].panels is not None
            and isinstance(plan[2], BinaryTail)
        ):
            return cls(plan[1], plan[2])
        return None

    def __call__(self, values: np.ndarray) -> torch.Tensor:
        """Logits of images ``values`` (B, ...) float32 on the 8-bit pixel grid."""
        from qnnlab.kernels._fused import dense_batch, dense_batch_amx

        flat = values.reshape(len(values), -1)
        if flat.shape[1] != self.first.linear.k:
            raise ValueError(f"the model takes {self.first.linear.k} features per image, got {flat.shape[1]}")
        out = np.empty((len(flat), len(self.tail.chain.scale)), dtype=np.float32)
        kernels.launch(
            dense_batch_amx if len(flat) >= self.first.amx_from else dense_batch,
            flat,
            *self.first.tables(),
            *self.tail.chain.tables(),
            out,
        )
        return torch.from_numpy(out)


class FusedCNN:
    """A binary CNN's plan (the first convolution on pixels, binary convolutions with pooling and
    threshold, the classifier's binary layers) as one kernel call for one sample
    (``_fused_conv.conv_chain``): every layer's tables travel as flat buffers with a geometry
    table, so a call costs one dispatch instead of one per layer."""

    def __init__(self, first: PixelConvThreshold, convs: list[ConvPoolThreshold], tail: BinaryTail, shape) -> None:
        from qnnlab.kernels import _fused_conv as fc

        _, height, width = first.conv.out_shape(shape)
        self.first = (
            first.panels,
            np.array(
                [
                    *first.conv.kernel,
                    first.conv.stride,
                    first.conv.padding,
                    height,
                    width,
                    kernels.words(first.conv.out_channels),
                ]
            ),
            *first.ranges(*shape[1:]),
        )
        rows, panels, corrections, lows, highs = [], [], [], [], []
        sizes = np.zeros(3, dtype=np.int64)  # the flat buffers' lengths so far
        for step in convs:
            conv = step.conv
            _, conv_h, conv_w = conv.out_shape((conv.channels, height, width))
            height, width = conv_h // step.pool, conv_w // step.pool
            units = conv.out_channels
            out_words = kernels.words(units * height * width) if step.flat else kernels.words(units)
            row = np.zeros(fc.GEOMETRY_COLUMNS, dtype=np.int64)
            row[[fc.CHANNELS, fc.KH, fc.KW, fc.STRIDE, fc.PADDING, fc.POOL]] = (
                conv.channels,
                *conv.kernel,
                conv.stride,
                conv.padding,
                step.pool,
            )
            row[[fc.OUT_H, fc.OUT_W, fc.OUT_WORDS, fc.FLAT, fc.UNITS]] = height, width, out_words, step.flat, units
            row[[fc.PANEL_COUNT, fc.PANEL_WORDS]] = step.panels.shape[:2]
            row[[fc.PANELS_AT, fc.CORRECTIONS_AT, fc.THRESHOLDS_AT]] = sizes
            row[fc.THRESHOLDS] = len(step.low)
            parts = (step.panels.reshape(-1), step.corrections.reshape(-1), step.low)
            sizes += [len(part) for part in parts]
            rows.append(row)
            panels.append(parts[0])
            corrections.append(parts[1])
            lows.append(step.low)
            highs.append(step.high)
        self.convs = (
            np.stack(rows),
            np.concatenate(panels),
            np.concatenate(corrections),
            np.concatenate(lows),
            np.concatenate(highs),
        )
        self.tail = tail.chain.tables()
        self.classes = len(tail.chain.scale)

    @classmethod
    def match(cls, plan: list[Any], shape: tuple[int, ...] | None) -> FusedCNN | None:
        """The fused form of a plan of PixelConvThreshold, ConvPoolThreshold (the last flat) and a
        BinaryTail, for inputs of ``shape`` (C, H, W); else None."""
        if shape is None or len(shape) != 3 or len(plan) < 3:
            return None
        first, convs, tail = plan[0], plan[1:-1], plan[-1]
        if not (
            isinstance(first, PixelConvThreshold)
            and all(isinstance(step, ConvPoolThreshold) for step in convs)
            and isinstance(tail, BinaryTail)
            and convs[-1].flat
            and not any(step.flat for step in convs[:-1])
        ):
            return None
        return cls(first, convs, tail, shape)

    def __call__(self, values: np.ndarray) -> torch.Tensor:
        """Logits of one image ``values`` (1, C, H, W) float32 on the 8-bit pixel grid."""
        from qnnlab.kernels._fused_conv import conv_chain

        if len(values) != 1:
            raise ValueError(f"the fused CNN runs one image at a time, got a batch of {len(values)}")
        out = np.empty((1, self.classes), dtype=np.float32)
        kernels.launch(conv_chain, values, *self.first, *self.convs, *self.tail, out)
        return torch.from_numpy(out)


def _padded(values: np.ndarray, size: int) -> np.ndarray:
    """``values`` followed by zeros up to ``size`` entries (kernels read whole 64-entry words)."""
    out = np.zeros(size, dtype=values.dtype)
    out[: len(values)] = values
    return out


def _floats(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """x as a C-contiguous float32 array, x's own memory where it already is one."""
    if isinstance(x, np.ndarray):
        return np.ascontiguousarray(x, dtype=np.float32)
    return x.to(torch.float32).contiguous().numpy()


def _words(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """Packed bits x (int64 words) as a C-contiguous uint64 array."""
    return np.ascontiguousarray(x if isinstance(x, np.ndarray) else x.numpy()).view(np.uint64)


def _like(x: torch.Tensor | np.ndarray, out: np.ndarray) -> torch.Tensor | np.ndarray:
    """out as x came: an array for an array (``ArrayStep``), else a tensor."""
    return out if isinstance(x, np.ndarray) else torch.from_numpy(out)


def packed_plan(steps: list[Any], on_pixel_grid: bool) -> list[Any]:
    """The callables the packed path runs: the ops, with fusable runs replaced (the first layer
    only where inputs are checked to lie on the pixel grid)."""
    plan, i = [], 0
    while i < len(steps):
        fused = (
            ConvPoolThreshold.match(steps, i)
            or (PixelConvThreshold.match(steps, i) if on_pixel_grid else None)
            or (PixelLinearThreshold.match(steps, i) if on_pixel_grid else None)
            or (PixelLinear.match(steps, i) if on_pixel_grid else None)
            or (PixelConv.match(steps, i) if on_pixel_grid else None)
            or ResidualDense.match(steps, i)
            or ResidualConv.match(steps, i)
            or (BinaryTail.match(steps, i) if i > 0 else None)
        )
        if fused:
            plan.append(fused[0])
            i += fused[1]
        else:
            plan.append(steps[i].packed)
            i += 1
    return plan
