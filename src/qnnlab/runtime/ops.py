"""The runtime's operations. Each op is a small dict in the model file plus named tensors; at load
``build`` turns it into an ``Op`` object holding its tensors and whatever it derives from them
(transposed or unpacked weights), with a packed path ``packed(x)`` and a
plain PyTorch reference ``reference(x)`` that tests compare against.

Ops:
- ``flatten``: (B, ...) -> (B, F).
- ``binary_linear``: packed input bits (B, W) x packed +-1 weights (N, W) -> int32 (B, N) + bias.
- ``real_linear``: real input (B, K) x packed +-1 weights: the first layer. When the input lies on
  the 8-bit pixel grid x = c / 127.5 - 1 (as the trainer feeds it), the product is computed exactly
  from the pixel codes' bit planes (QNN paper): x . w = (sum_i 2^i (c_i . w)) / 127.5 - sum(w);
  otherwise with the unpacked +-1 weights in float.
- ``threshold``: batch norm followed by sign, fused: bit = (y >= t) for channels with a positive
  batch-norm scale, (y <= t) for negative ones, constant where the scale is 0; output packed.
- ``affine``: the output batch norm, y * scale + shift, giving the logits.
- ``real_conv``: the first convolution, real input against +-1 filters (float, as PyTorch).
- ``binary_conv``: channel-packed bits (B, H, W, Wc) against packed filters, directly on the
  packed image (taps on the zero padding add nothing) -> (B, H', W', O).
- ``maxpool``: max pooling of the integer pre-activations (before the threshold, as trained), or
  of real feature maps.

Ops on real-valued feature maps (the convolutions of BinaryConnect, BWN, DoReFa, QNN, XNOR-Net,
BNN+'s residual blocks) are in ``maps``.
"""

from __future__ import annotations

import contextlib
import functools
import math
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from qnnlab import kernels

FLOAT32_EXACT = 1 << 24  # float32 holds every integer below this exactly

OPS: dict[str, type[Op]] = {}


def register(cls: type[Op]) -> type[Op]:
    OPS[cls.kind] = cls
    return cls


def build(spec: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Op:
    """The op of one entry of a model file's op list."""
    if spec.get("op") not in OPS:
        raise ValueError(f"unknown op {spec.get('op')!r} in the model file; is it from a newer qnnlab?")
    return OPS[spec["op"]](spec, tensors)


class Op:
    """One step of a packed model. ``out_shape`` checks the op's tables against the shape it is
    given (per image, in PyTorch's (C, H, W) / (F,) order) and answers the shape it hands on, so a
    model file whose tables do not fit together, or an input of another size, is refused before
    a kernel reads a table past its end."""

    kind: ClassVar[str]

    def __init__(self, spec: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        self.spec, self.layer = spec, spec.get("layer", spec.get("op"))
        self.bias = self._tensor(tensors, "bias", torch.float32) if spec.get("bias") else None

    def _tensor(self, tensors: dict[str, torch.Tensor], key: str, *dtypes: torch.dtype) -> torch.Tensor:
        name = self.spec.get(key)
        if not isinstance(name, str) or name not in tensors:
            raise ValueError(f"{self.kind} op of layer {self.layer}: its {key} tensor {name!r} is not in the file")
        if tensors[name].dtype not in dtypes:
            raise ValueError(
                f"{self.kind} op of layer {self.layer}: {key} is {tensors[name].dtype}, expected {dtypes[0]}"
            )
        return tensors[name]

    def _count(self, key: str, least: int = 1) -> int:
        value = self.spec.get(key)
        if type(value) is not int or value < least:
            raise ValueError(f"{self.kind} op of layer {self.layer}: {key}={value!r} must be an integer >= {least}")
        return value

    def _fits(self, what: str, tensor: torch.Tensor, shape: tuple[int, ...]) -> None:
        if tuple(tensor.shape) != shape:
            raise ValueError(
                f"{self.kind} op of layer {self.layer}: {what} has shape {tuple(tensor.shape)} but its input "
                f"needs {shape}; the file is inconsistent or the input has another size"
            )

    def _bias_fits(self, n: int) -> None:
        if self.bias is not None:
            self._fits("bias", self.bias, (n,))

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return shape

    def packed(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        return self.packed(x)

    def _add_bias(self, y: torch.Tensor, view: tuple[int, ...] = (-1,)) -> torch.Tensor:
        return y if self.bias is None else y + self.bias.reshape(view)


@register
class Flatten(Op):
    kind = "flatten"

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (math.prod(shape),)

    def packed(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1)


def _features(op: Op, shape: tuple[int, ...], k: int) -> None:
    if shape != (k,):
        raise ValueError(f"{op.kind} op of layer {op.layer} takes {k} features, its input has shape {shape}")


class PackedWeight:
    """An op whose packed +-1 weight (N, W) multiplies packed bits: the weight's register-tile
    layout (``kernels.binary_panels``), made at the first packed call, once the load has checked
    the weight's shape."""

    weight: torch.Tensor

    @functools.cached_property
    def panels(self) -> torch.Tensor:
        return kernels.binary_panels(self.weight)


@register
class BinaryLinear(PackedWeight, Op):
    """Packed input bits (B, W) x packed +-1 weights (N, W) -> (B, N) + bias."""

    kind = "binary_linear"

    def __init__(self, spec: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        super().__init__(spec, tensors)
        self.weight, self.k = self._tensor(tensors, "weight", torch.int64), self._count("k")

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        _features(self, shape, self.k)
        n = self.weight.shape[0] if self.weight.dim() == 2 else -1
        self._fits("weight", self.weight, (n, kernels.words(self.k)))
        self._bias_fits(n)
        return (n,)

    def packed(self, x: torch.Tensor) -> torch.Tensor:
        return self._add_bias(kernels.binary_matmul(x, self.weight, self.k, self.panels).to(torch.float32))

    def reference(self, x: torch.Tensor) -> torch.Tensor:  # x holds +-1 floats from the reference threshold
        return self._add_bias(x @ kernels.unpack(self.weight, self.k).T)


@register
class RealLinear(Op):
    """The first layer: real input (B, K) x packed +-1 weights. On the 8-bit pixel grid
    x = c / 127.5 - 1 the product is exact integer arithmetic on the pixel codes:
    x . w = (c . w) / 127.5 - sum(w); elsewhere float with the unpacked weights."""

    kind = "real_linear"

    def __init__(self, spec: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        super().__init__(spec, tensors)
        self.weight, self.k = self._tensor(tensors, "weight", torch.int64), self._count("k")
        self.weight_sum = self._tensor(tensors, "weight_sum", torch.float64)
        self._int8_weights: torch.Tensor | None = None
        self._float_weights: torch.Tensor | None = None
        self._transposed: torch.Tensor | None = None
        self.grid_checked = False  # set by a model that checks its inputs lie on the pixel grid
        self._offset: torch.Tensor | None = None

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        _features(self, shape, self.k)
        n = self.weight.shape[0] if self.weight.dim() == 2 else -1
        self._fits("weight", self.weight, (n, kernels.words(self.k)))
        self._fits("weight_sum", self.weight_sum, (n,))
        self._bias_fits(n)
        return (n,)

    def _check(self, x: torch.Tensor) -> None:
        if x.shape[1] != self.k:
            raise ValueError(f"input has {x.shape[1]} features, the model expects {self.k}")

    def packed(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        codes = (x.to(torch.float32) + 1) * 127.5  # float32 resolves 8-bit codes to ~1e-5
        rounded = codes.round()
        if rounded.numel() == 0:
            return self.reference(x)
        if not self.grid_checked:
            low, high = rounded.aminmax()
            if bool((codes - rounded).abs().max() > 1e-3) or bool(low < 0) or bool(high > 255):
                return self.reference(x)
        y = self.centred_sums(rounded).to(torch.float64).div_(127.5).add_(self.offset()).to(torch.float32)
        return self._add_bias(y)

    def offset(self) -> torch.Tensor:
        """(128 / 127.5 - 1) sum(w): x . w = (c - 128) . w / 127.5 + offset for x = c / 127.5 - 1."""
        if self._offset is None:
            self._offset = (128 / 127.5 - 1) * self.weight_sum.to(torch.float64)
        return self._offset

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return self._add_bias(x.to(torch.float32) @ kernels.unpack(self.weight, self.k).T)

    def centred_sums(self, codes: torch.Tensor) -> torch.Tensor:
        """Exact sum_t (c_t - 128) w_t for pixel codes (whole floats 0..255) and +-1 weights. Where the
        CPU has integer dot-product instructions (VNNI), torch's int8 GEMM, (c - 128) and w in int8;
        elsewhere torch's int8 GEMM is a slow reference loop, and a float32 GEMM is exact while every
        partial sum is an integer below 2^24 (|c - 128| <= 128 over k < 2^17 terms); past that, the
        bit-plane AND-popcount kernel (QNN paper) gives c . w."""
        if kernels.int8_dot_products():
            if self._int8_weights is None:
                self._int8_weights = kernels.unpack(self.weight, self.k).to(torch.int8).T.contiguous()
            with contextlib.suppress(AttributeError, RuntimeError):  # torch builds without _int_mm on CPU
                return torch._int_mm((codes - 128).to(torch.int8), self._int8_weights)
        if 128 * self.k < FLOAT32_EXACT:
            if self._float_weights is None:
                self._float_weights = kernels.unpack(self.weight, self.k).T.contiguous()
            return (codes - 128) @ self._float_weights
        if self._transposed is None:
            self._transposed = self.weight.T.contiguous()
        return kernels.pixel_matmul(codes.to(torch.uint8), self._transposed, self.k) - 128 * self.weight_sum.long()


@register
class SignWeightLinear(Op):
    """Real inputs (B, K) times binary weights alpha_o sign(W) (packed (N, W)), with additions only
    (``kernels.sign_weight_matmul``), then the scale per output where the weights have one."""

    kind = "sign_weight_linear"

    def __init__(self, spec: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        super().__init__(spec, tensors)
        self.weight, self.k = self._tensor(tensors, "weight", torch.int64), self._count("k")
        self.alpha = self._tensor(tensors, "alpha", torch.float32) if spec.get("alpha") else None

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        _features(self, shape, self.k)
        n = self.weight.shape[0] if self.weight.dim() == 2 else -1
        self._fits("weight", self.weight, (n, kernels.words(self.k)))
        if self.alpha is not None:
            self._fits("alpha", self.alpha, (n,))
        self._bias_fits(n)
        return (n,)

    @functools.cached_property
    def panels(self) -> torch.Tensor | None:
        """The weights laid out for table lookups, once (None on CPUs without them)."""
        return kernels.sign_weight_panels(self.weight, self.k, integer=False)

    def packed(self, x: torch.Tensor) -> torch.Tensor:
        y = kernels.sign_weight_matmul(x.to(torch.float32), self.weight, self.k, self.panels)
        return self._add_bias(y if self.alpha is None else y * self.alpha)

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        return self._add_bias(self.input_values(x) @ self.weight_values().T)

    def input_values(self, x: torch.Tensor) -> torch.Tensor:
        """The inputs as the layer multiplies them (after its input quantizer)."""
        return x.to(torch.float32)

    def weight_values(self) -> torch.Tensor:
        """(N, K) float32: the weights as the layer multiplies them."""
        w = kernels.unpack(self.weight, self.k)
        return w if self.alpha is None else w * self.alpha[:, None]


@register
class TernaryLinear(Op):
    """Real inputs (B, K) times ternary weights alpha_o t (t in {-1, 0, +1}) stored as two packed
    planes, where t = +1 and where t = -1: x . t = (s(x, plus) - s(x, minus)) / 2 with s the
    additions-only sign product (``kernels.sign_weight_matmul``: sum over set bits minus the rest)."""

    kind = "ternary_linear"

    def __init__(self, spec: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        super().__init__(spec, tensors)
        self.k = self._count("k")
        self.plus, self.minus = self._tensor(tensors, "plus", torch.int64), self._tensor(tensors, "minus", torch.int64)
        self.alpha = self._tensor(tensors, "alpha", torch.float32)

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        _features(self, shape, self.k)
        n = self.plus.shape[0] if self.plus.dim() == 2 else -1
        for what, plane in (("plus", self.plus), ("minus", self.minus)):
            self._fits(what, plane, (n, kernels.words(self.k)))
        self._fits("alpha", self.alpha, (n,))
        self._bias_fits(n)
        return (n,)

    @functools.cached_property
    def panels(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Both planes laid out for table lookups, once (None on CPUs without them)."""
        return tuple(kernels.sign_weight_panels(p, self.k, integer=False) for p in (self.plus, self.minus))

    def packed(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float32)
        plus, minus = self.panels
        t = kernels.sign_weight_matmul(x, self.plus, self.k, plus) - kernels.sign_weight_matmul(
            x, self.minus, self.k, minus
        )
        return self._add_bias(t * (self.alpha / 2))

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        return self._add_bias(self.input_values(x) @ self.weight_values().T)

    def input_values(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(torch.float32)

    def weight_values(self) -> torch.Tensor:
        t = (kernels.unpack(self.plus, self.k) - kernels.unpack(self.minus, self.k)) / 2
        return t * self.alpha[:, None]


@register
class XnorLinear(PackedWeight, SignWeightLinear):
    """XNOR-Net's fully connected layer: y = K alpha_o (sign(x) . sign(W)) with K = mean |x| per
    sample, the product by popcounts on the packed signs (``kernels.binary_matmul``)."""

    kind = "xnor_linear"

    def packed(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float32)
        scale = x.abs().mean(1, keepdim=True)
        y = kernels.binary_matmul(kernels.pack(x), self.weight, self.k, self.panels).to(torch.float32) * scale
        return self._add_bias(y if self.alpha is None else y * self.alpha)

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float32)
        return self._add_bias((self.input_values(x) @ self.weight_values().T) * x.abs().mean(1, keepdim=True))

    def input_values(self, x: torch.Tensor) -> torch.Tensor:
        """sign(x), sign(0) = +1; the layer's output is then scaled by K."""
        return torch.where(x >= 0, 1.0, -1.0)


@register
class CodesLinear(SignWeightLinear):
    """Inputs on an unsigned k-bit grid, x = lo + (hi - lo) c / (2^k - 1) for codes c (DoReFa's
    activations), times binary weights alpha_o sign(W): the codes' bit planes against the packed
    weights, sum_i 2^i (c_i . s) as AND-popcounts (``kernels.bitplane_matmul``), exact in integers,
    then y = alpha (lo sum(s) + (hi - lo) / (2^k - 1) c . s)."""

    kind = "codes_linear"

    def __init__(self, spec: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        super().__init__(spec, tensors)
        self.bits = self._count("bits")
        self.lo, self.hi = spec.get("lo"), spec.get("hi")
        if not all(isinstance(v, (int, float)) for v in (self.lo, self.hi)) or not self.lo < self.hi:
            raise ValueError(f"codes_linear op of layer {self.layer}: grid [{self.lo}, {self.hi}] is malformed")
        self.weight_sum = self._tensor(tensors, "weight_sum", torch.float64)
        self.levels = 2**self.bits - 1

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        n = super().out_shape(shape)
        self._fits("weight_sum", self.weight_sum, n)
        return n

    def _codes(self, x: torch.Tensor) -> torch.Tensor:
        return ((x.to(torch.float32).clamp(self.lo, self.hi) - self.lo) * (self.levels / (self.hi - self.lo))).round()

    def packed(self, x: torch.Tensor) -> torch.Tensor:
        sums = kernels.bitplane_matmul(self._codes(x).to(torch.int64), self.weight, self.k, self.bits)
        y = self.lo * self.weight_sum + (self.hi - self.lo) / self.levels * sums.to(torch.float64)
        y = y.to(torch.float32)
        return self._add_bias(y if self.alpha is None else y * self.alpha)

    def input_values(self, x: torch.Tensor) -> torch.Tensor:
        return self.lo + (self.hi - self.lo) * self._codes(x) / self.levels


@register
class GridLinear(Op):
    """k-bit inputs times k-bit weights, both on affine grids (QNN): x = a_lo + a_step u and
    w = w_lo + w_step d for integer codes, so x . w = K a_lo w_lo + a_lo w_step sum(d) +
    w_lo a_step sum(u) + a_step w_step (u . d), the last by bit-serial AND-popcounts
    (``kernels.bitserial_matmul``). The input codes follow the layer's quantizer (affine or
    symmetric, see ``runtime.export``)."""

    kind = "grid_linear"

    def __init__(self, spec: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        super().__init__(spec, tensors)
        self.codes = self._tensor(tensors, "codes", torch.uint8)
        self.w_bits = self._count("w_bits")
        grid = spec.get("input")
        numbers = ("w_lo", "w_step")
        if not all(isinstance(spec.get(k), (int, float)) for k in numbers) or not isinstance(grid, dict):
            raise ValueError(f"grid_linear op of layer {self.layer}: malformed grid {[spec.get(k) for k in numbers]}")
        self.w_lo, self.w_step, self.grid = float(spec["w_lo"]), float(spec["w_step"]), grid
        if grid.get("kind") == "affine" and all(isinstance(grid.get(k), (int, float)) for k in ("lo", "hi", "levels")):
            self.a_lo, self.a_step = float(grid["lo"]), (grid["hi"] - grid["lo"]) / grid["levels"]
        elif grid.get("kind") == "symmetric" and all(isinstance(grid.get(k), (int, float)) for k in ("range", "n")):
            self.a_lo, self.a_step = -float(grid["range"]), grid["range"] / grid["n"]
        else:
            raise ValueError(f"grid_linear op of layer {self.layer}: unknown input grid {grid!r}")
        if type(grid.get("bits")) is not int or not 1 <= grid["bits"] <= 16:
            raise ValueError(f"grid_linear op of layer {self.layer}: input bits {grid.get('bits')!r}")
        self.code_sums = self.codes.to(torch.float64).sum(1) if self.codes.dim() == 2 else None

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        n, k = self.codes.shape if self.codes.dim() == 2 else (-1, -1)
        _features(self, shape, k)
        if self.codes.numel() and int(self.codes.max()) >= 2**self.w_bits:
            raise ValueError(f"grid_linear op of layer {self.layer}: weight codes exceed {self.w_bits} bits")
        self._bias_fits(n)
        return (n,)

    def _input_codes(self, x: torch.Tensor) -> torch.Tensor:
        g = self.grid
        if g["kind"] == "affine":
            return torch.round(((x - g["lo"]) / (g["hi"] - g["lo"])).clamp(0, 1) * g["levels"])
        return torch.round((x / g["range"]).clamp(-1, 1) * g["n"]) + g["n"]

    def packed(self, x: torch.Tensor) -> torch.Tensor:
        u = self._input_codes(x.to(torch.float32))
        ud = kernels.bitserial_matmul(u.to(torch.int64), self.codes.to(torch.int64), self.grid["bits"], self.w_bits)
        k = self.codes.shape[1]
        y = (
            k * self.a_lo * self.w_lo
            + self.a_lo * self.w_step * self.code_sums
            + self.w_lo * self.a_step * u.to(torch.float64).sum(1, keepdim=True)
            + self.a_step * self.w_step * ud.to(torch.float64)
        )
        return self._add_bias(y.to(torch.float32))

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        return self._add_bias(self.input_values(x) @ self.weight_values().T)

    def input_values(self, x: torch.Tensor) -> torch.Tensor:
        return self.a_lo + self.a_step * self._input_codes(x.to(torch.float32))

    def weight_values(self) -> torch.Tensor:
        return self.w_lo + self.w_step * self.codes.to(torch.float32)


@register
class Linear(Op):
    """A float fully connected layer (a first or last layer a recipe keeps in float)."""

    kind = "linear"

    def __init__(self, spec: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        super().__init__(spec, tensors)
        self.weight = self._tensor(tensors, "weight", torch.float32)

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        k = self.weight.shape[1] if self.weight.dim() == 2 else -1
        _features(self, shape, k)
        self._bias_fits(self.weight.shape[0])
        return (self.weight.shape[0],)

    def packed(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x.to(torch.float32), self.weight, self.bias)


@register
class ReLU(Op):
    kind = "relu"

    def packed(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)


@register
class Threshold(Op):
    """Batch norm followed by sign, fused: bit = (y >= t) for channels with a positive batch-norm
    scale, (y <= t) for negative ones, constant where the scale is 0; output packed. Layouts:
    rows (B, N) -> packed rows; nhwc: channel-packed (B, H, W, Wc); flat: packed rows of the
    flattened (C, H, W) features."""

    kind = "threshold"

    def __init__(self, spec: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        super().__init__(spec, tensors)
        self.t = self._tensor(tensors, "threshold", torch.float64)
        self.positive = self._tensor(tensors, "positive", torch.bool)
        self.constant = self._tensor(tensors, "constant", torch.float64)
        self.layout = spec.get("layout", "rows")
        self._tables: tuple | None = None
        if self.layout not in ("rows", "nhwc", "flat"):
            raise ValueError(f"threshold op of layer {self.layer}: unknown layout {self.layout!r}")

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if self.layout != "rows" and len(shape) != 3:
            raise ValueError(f"threshold op of layer {self.layer} ({self.layout}) takes feature maps, got {shape}")
        n = shape[0] if self.layout == "nhwc" else math.prod(shape)
        for what, table in (("threshold", self.t), ("positive", self.positive), ("constant", self.constant)):
            self._fits(what, table, (n,))
        return shape if self.layout == "nhwc" else (n,)

    def packed(self, x: torch.Tensor) -> torch.Tensor:
        if self.layout == "nhwc":  # the packed path's feature maps are NHWC already
            batch, height, width, channels = x.shape
            rows = x.reshape(-1, channels)
        elif self.layout == "flat":  # the classifier reads features in (C, H, W) order
            rows = x.permute(0, 3, 1, 2).reshape(x.shape[0], -1)
        else:
            rows = x.reshape(x.shape[0], -1)
        if self._tables is None:
            self._tables = kernels.threshold_tables(self.t, self.positive, self.constant)
        packed = kernels.threshold_pack_tables(rows, *self._tables)
        return packed.reshape(batch, height, width, -1) if self.layout == "nhwc" else packed

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        if self.layout == "nhwc":
            batch, channels, height, width = x.shape
            rows = x.permute(0, 2, 3, 1).reshape(-1, channels)
        else:
            rows = x.reshape(x.shape[0], -1)
        y = rows.to(torch.float64)
        bits = torch.where(self.positive, y >= self.t, y <= self.t)
        bits = torch.where(self.constant >= 0, self.constant > 0, bits)  # a zero batch-norm scale: a constant sign
        values = bits.to(torch.float32) * 2 - 1
        return values.reshape(batch, height, width, channels).permute(0, 3, 1, 2) if self.layout == "nhwc" else values


@register
class Affine(Op):
    """A batch norm at inference, y * scale + shift: the logits', or a real stream's (BNN+)."""

    kind = "affine"

    def __init__(self, spec: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        super().__init__(spec, tensors)
        self.scale = self._tensor(tensors, "scale", torch.float32)
        self.shift = self._tensor(tensors, "shift", torch.float32)

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        self._fits("scale", self.scale, shape)
        self._fits("shift", self.shift, shape)
        return shape

    def packed(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.scale).add_(self.shift)  # two roundings, as the fused kernels; one new tensor


class ConvGeometry(Op):
    """Channels, kernel, stride and zero padding of a convolution op, and the map size it hands on."""

    def __init__(self, spec: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        super().__init__(spec, tensors)
        self.channels, self.out_channels = self._count("channels"), self._count("out_channels")
        kernel = spec.get("kernel")
        if not (isinstance(kernel, list) and len(kernel) == 2 and all(type(k) is int and k >= 1 for k in kernel)):
            raise ValueError(f"{self.kind} op of layer {self.layer}: kernel={kernel!r} must be two positive integers")
        self.kernel = tuple(kernel)
        self.stride, self.padding = self._count("stride"), self._count("padding", 0)

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(shape) != 3 or shape[0] != self.channels:
            raise ValueError(f"{self.kind} op of layer {self.layer} takes ({self.channels}, H, W) maps, got {shape}")
        size = [(n + 2 * self.padding - k) // self.stride + 1 for n, k in zip(shape[1:], self.kernel)]
        if min(size) < 1:
            raise ValueError(f"{self.kind} op of layer {self.layer}: a {shape[1:]} map is smaller than its kernel")
        return (self.out_channels, *size)


class _Conv(ConvGeometry):
    def __init__(self, spec: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        super().__init__(spec, tensors)
        self.weight = self._tensor(tensors, "weight", torch.int64)
        self._fits("weight", self.weight, self.packed_shape())
        self._bias_fits(self.out_channels)

    def packed_shape(self) -> tuple[int, int]:
        raise NotImplementedError


@register
class RealConv(_Conv):
    """The first convolution: real input against +-1 filters, in float as PyTorch; the packed path
    hands on its feature maps in NHWC."""

    kind = "real_conv"

    def packed_shape(self) -> tuple[int, int]:
        return (self.out_channels, kernels.words(self.channels * self.kernel[0] * self.kernel[1]))

    def __init__(self, spec: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        super().__init__(spec, tensors)
        kh, kw = self.kernel
        unpacked = kernels.unpack(self.weight, self.channels * kh * kw)
        self.filters = unpacked.reshape(self.out_channels, self.channels, kh, kw)
        self._matrix: torch.Tensor | None = None

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(x.to(torch.float32), self.filters, stride=self.stride, padding=self.padding)
        return self._add_bias(y, (-1, 1, 1))

    def packed(self, x: torch.Tensor) -> torch.Tensor:
        """As im2col patches times the filters: the product comes out NHWC, as the packed path
        wants it, with no transposing copy of the feature maps."""
        batch, _, height, width = x.shape
        kh, kw = self.kernel
        out_h = (height + 2 * self.padding - kh) // self.stride + 1
        out_w = (width + 2 * self.padding - kw) // self.stride + 1
        patches = F.unfold(x.to(torch.float32), self.kernel, padding=self.padding, stride=self.stride)
        if self._matrix is None:
            self._matrix = self.filters.reshape(self.out_channels, -1).T.contiguous()
        y = (patches.transpose(1, 2).reshape(-1, self._matrix.shape[0]) @ self._matrix).reshape(batch, out_h, out_w, -1)
        return self._add_bias(y)


@register
class BinaryConv(_Conv):
    """Channel-packed bits (B, H, W, Wc) against packed filters, on the binary GEMM's register tiles
    (``kernels._fused_conv``): taps on the zero padding add nothing, as zero padding of +-1 values
    does in training."""

    kind = "binary_conv"

    def packed_shape(self) -> tuple[int, int]:
        return (self.out_channels, self.kernel[0] * self.kernel[1] * kernels.words(self.channels))

    def __init__(self, spec: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        super().__init__(spec, tensors)
        kh, kw = self.kernel
        per_pixel = self.weight.reshape(self.out_channels, kh, kw, kernels.words(self.channels))
        self.filters = kernels.unpack(per_pixel, self.channels).permute(0, 3, 1, 2)  # (O, C, kh, kw) +-1

    @functools.cached_property
    def panels(self) -> np.ndarray:
        """The filters (O, kh kw Wc) in the register-tile layout (``kernels._panels.panels``)."""
        from qnnlab.kernels import _panels

        return _panels.panels(self.weight.numpy().view(np.uint64))

    @functools.cached_property
    def corrections(self) -> np.ndarray:
        """(kh, kw, O) int32: C - 2 popcount of filter o's words at each tap, what a tap on the
        zero padding adds when read as -1 bits (``kernels._fused_conv``)."""
        from qnnlab.kernels import _panels

        kh, kw = self.kernel
        taps = self.weight.numpy().view(np.uint64).reshape(self.out_channels * kh * kw, -1)
        ones = np.empty(len(taps), dtype=np.int64)
        kernels.launch(_panels.row_popcounts, taps, ones)
        return np.ascontiguousarray(
            (self.channels - 2 * ones).reshape(self.out_channels, kh, kw).transpose(1, 2, 0)
        ).astype(np.int32)

    def packed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H', W', O) float32 on the GEMM's register tiles (``_fused_conv.conv_values``)."""
        from qnnlab.kernels import _fused_conv, _words_view

        if x.dim() != 4 or x.shape[3] != kernels.words(self.channels):
            raise ValueError(
                f"binary_conv op of layer {self.layer} takes channel-packed (B, H, W, "
                f"{kernels.words(self.channels)}) bits, got {tuple(x.shape)}"
            )
        _, out_h, out_w = self.out_shape((self.channels, x.shape[1], x.shape[2]))
        n = self.out_channels
        bias = np.zeros(n, dtype=np.float32) if self.bias is None else self.bias.numpy().astype(np.float32)
        conv = (_words_view(x), self.panels, self.corrections, self.channels, self.stride, self.padding, 1, bias)
        out = np.empty((len(x), out_h, out_w, n), dtype=np.float32)
        kernel = _fused_conv.conv_values_serial if len(x) == 1 else _fused_conv.conv_values
        kernels.launch(kernel, (*conv, np.ones(n, np.float32), np.zeros(n, np.float32)), out)
        return torch.from_numpy(out)

    def reference(self, x: torch.Tensor) -> torch.Tensor:  # x holds +-1 floats (B, C, H, W)
        y = F.conv2d(x, self.filters, stride=self.stride, padding=self.padding)
        return self._add_bias(y, (-1, 1, 1))


@register
class MaxPool(Op):
    """Max pooling of the integer pre-activations (before the threshold, as trained)."""

    kind = "maxpool"

    def __init__(self, spec: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        super().__init__(spec, tensors)
        for key in ("kernel", "stride"):
            value = spec.get(key)
            value = value if isinstance(value, list) else [value]
            if not all(type(v) is int and v >= 1 for v in value) or len(value) > 2:
                raise ValueError(f"maxpool op of layer {self.layer}: {key}={spec.get(key)!r} must be positive integers")

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        pair = lambda v: v if isinstance(v, list) else [v, v]  # noqa: E731
        size = [(n - k) // s + 1 for n, k, s in zip(shape[1:], pair(self.spec["kernel"]), pair(self.spec["stride"]))]
        if len(shape) != 3 or min(size) < 1:
            raise ValueError(f"maxpool op of layer {self.layer}: cannot pool a {shape} input")
        return (shape[0], *size)

    def packed(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.max_pool2d(x.permute(0, 3, 1, 2), self.spec["kernel"], self.spec["stride"])  # a channels-last view
        return pooled.permute(0, 2, 3, 1)

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, self.spec["kernel"], self.spec["stride"])
