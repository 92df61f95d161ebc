"""Export a trained binary model to the packed format: a flat list of ops plus packed tensors.
Anything the runtime cannot run is refused by name (see ``export_model``)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from qnnlab import kernels
from qnnlab.models.vision import RealShortcut
from qnnlab.nn import QuantConv2d, QuantLinear, ShiftBatchNorm1d, ShiftBatchNorm2d
from qnnlab.quant.rounding import ap2

OUTPUT_OPS = (  # what a model may end with: the linear ops, whose outputs are the logits, or a batch norm's affine
    "affine",
    "linear",
    "binary_linear",
    "real_linear",
    "sign_weight_linear",
    "codes_linear",
    "xnor_linear",
    "ternary_linear",
    "grid_linear",
)


class ExportError(ValueError):
    """The model holds a layer or quantizer the packed runtime does not support."""


def batchnorm_affine(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) with bn(y) = y * scale + shift in eval mode, in float64."""
    mean, var = bn.running_mean.double(), bn.running_var.double()
    gamma = bn.weight.detach().double() if bn.affine else torch.ones_like(mean)
    beta = bn.bias.detach().double() if bn.affine else torch.zeros_like(mean)
    if isinstance(bn, (ShiftBatchNorm1d, ShiftBatchNorm2d)):
        scale = (ap2(gamma.float()) * ap2(torch.rsqrt(bn.running_var + bn.eps))).double()
    else:
        scale = gamma / torch.sqrt(var + bn.eps)
    return scale, beta - mean * scale


def _is_sign(q: Any) -> bool:
    """Plain +-1 values (the binary inference mode takes a stochastic sign's most probable value)."""
    return q.meta.kind == "binary" and not q.meta.scaled


def _is_pixel_grid(q: Any) -> bool:
    """8-bit codes on [-1, 1], the grid the trainer's pixels lie on (QNN's 8-bit first layer)."""
    meta = q.meta
    return meta.kind == "int" and meta.bits == 8 and meta.grid == (-1.0, 1.0) and not meta.stochastic


def _input_shapes(model: nn.Module, input_shape: tuple[int, ...] | None) -> dict[str, tuple[int, ...]]:
    """The input shape each child sees, from one forward pass on zeros (a batch norm whose output
    is flattened needs its feature map size)."""
    if input_shape is None:
        return {}
    shapes: dict[str, tuple[int, ...]] = {}

    def record(name: str):
        def hook(module, inputs, output) -> None:
            shapes.setdefault(name, tuple(inputs[0].shape))

        return hook

    hooks = [m.register_forward_hook(record(name)) for name, m in model.named_children()]
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        for h in hooks:
            h.remove()
    return shapes


def _threshold(
    name: str, bn: nn.Module, layout: str, tensors: dict[str, torch.Tensor], spatial: int = 1
) -> dict[str, Any]:
    """Batch norm + the next layer's sign as one threshold per channel (repeated per position for
    the flat layout): sign(y s + b) = +1 <=> y >= -b/s for s > 0, y <= -b/s for s < 0."""
    scale, shift = batchnorm_affine(bn)
    safe = torch.where(scale == 0, torch.ones_like(scale), scale)
    values = {
        "threshold": -shift / safe,
        "positive": scale > 0,
        "constant": torch.where(scale == 0, torch.where(shift >= 0, 1.0, 0.0), -1.0).double(),
    }
    op: dict[str, Any] = {"op": "threshold", "layout": layout, "layer": name}
    for key, value in values.items():
        tensors[f"{name}.{key}"] = value.repeat_interleave(spatial) if layout == "flat" else value
        op[key] = f"{name}.{key}"
    return op


def export_model(
    model: nn.Module, input_shape: tuple[int, ...] | None = None
) -> tuple[list[dict[str, Any]], dict[str, torch.Tensor]]:
    """(ops, tensors) for the runtime; raises ExportError naming what is not supported.

    Supported: sequential nets as the ``bnn`` / ``bnn-shift`` recipes build them: QuantLinear and
    QuantConv2d with sign weights (the first layer with real or 8-bit inputs, the others with sign
    inputs; a first layer on a k-bit grid runs bit-serial), batch norm (plain or shift-based, eval
    statistics) feeding a sign or ending the model, MaxPool2d, Flatten; nets with real or k-bit
    activations as BinaryConnect, BWN, DoReFa, QNN, XNOR-Net and the ternary recipes build them
    (their linear layers and convolutions, float Linear and Conv2d layers, batch norm as an affine
    map, ReLU, AvgPool2d); and Bi-Real blocks (``RealShortcut``, bnn-plus). Convolutions need
    ``input_shape``.
    """
    if not isinstance(model, nn.Sequential):
        raise ExportError(f"export supports nn.Sequential models; got {type(model).__name__}")
    model = model.eval()
    if any(isinstance(m, nn.Conv2d) for m in model) and input_shape is None:
        raise ExportError("a convolutional model needs input_shape=(C, H, W) to export")
    shapes = _input_shapes(model, input_shape)
    tensors: dict[str, torch.Tensor] = {}
    ops = _export_layers(list(model.named_children()), _Flow(), tensors, shapes)
    if not ops or ops[-1]["op"] not in OUTPUT_OPS:
        raise ExportError("the model must end with a linear layer or an output batch norm")
    return ops, tensors


@dataclasses.dataclass
class _Flow:
    """What flows between the layers being exported: ``first`` until the first weighted layer;
    ``real_maps`` while real NHWC feature maps flow (not packed bits, not vectors)."""

    first: bool = True
    real_maps: bool = False


@dataclasses.dataclass
class _Layer:
    """One layer being exported and what its handler may need around it."""

    name: str
    module: nn.Module
    following: list[nn.Module]  # the next two layers (a batch norm looks ahead for the sign it feeds)
    ops: list[dict[str, Any]]  # the ops exported so far in this sequence
    flow: _Flow
    tensors: dict[str, torch.Tensor]
    shapes: dict


_Handler = Callable[[_Layer], list[dict[str, Any]]]
_HANDLERS: list[tuple[Callable[[_Layer], bool], _Handler]] = []


def _handles(matches: Callable[[_Layer], bool]) -> Callable[[_Handler], _Handler]:
    """Register a handler for the layers ``matches`` accepts; the first registered match exports a
    layer, so a new layer kind is one handler here and one op in ``runtime.ops`` or ``runtime.maps``."""

    def register(handler: _Handler) -> _Handler:
        _HANDLERS.append((matches, handler))
        return handler

    return register


def _export_layers(
    children: list[tuple[str, nn.Module]], flow: _Flow, tensors: dict[str, torch.Tensor], shapes: dict
) -> list[dict[str, Any]]:
    """The ops of a sequence of layers, ``flow`` updated as they go."""
    ops: list[dict[str, Any]] = []
    layers = [(name, m) for name, m in children if not isinstance(m, (nn.Identity, nn.Dropout))]
    for index, (name, m) in enumerate(layers):
        layer = _Layer(name, m, [later for _, later in layers[index + 1 : index + 3]], ops, flow, tensors, shapes)
        handler = next((handler for matches, handler in _HANDLERS if matches(layer)), None)
        if handler is None:
            raise ExportError(
                f"layer {name} ({type(m).__name__}) is not supported by the packed runtime; "
                f"it runs binary QuantLinear / QuantConv2d, float Linear and Conv2d, batch norm, ReLU, MaxPool2d, "
                f"AvgPool2d, Flatten and Bi-Real shortcuts"
            )
        ops.extend(handler(layer))
    return ops


def _packed_binary(m: nn.Module, first: bool) -> bool:
    """A BNN layer (sign weights on sign inputs, or on the real or 8-bit input image), which the
    binary path runs on packed bits; every other quantized layer is a product of ``_product_op``."""
    real_input = m.input_quantizer.meta.kind == "float" or _is_pixel_grid(m.input_quantizer)
    return _is_sign(m.weight_quantizer) and (_is_sign(m.input_quantizer) or (first and real_input))


@_handles(lambda layer: isinstance(layer.module, nn.Flatten))
def _flatten(layer: _Layer) -> list[dict[str, Any]]:
    if layer.flow.real_maps:
        layer.flow.real_maps = False
        return [{"op": "flatten_maps", "layer": layer.name}]
    last = layer.ops[-1] if layer.ops else None
    if last and last["op"] == "threshold" and last["layout"] == "flat":
        return []  # the flat threshold has laid the bits out already
    return [{"op": "flatten"}]


@_handles(
    lambda layer: (
        type(layer.module) is nn.Conv2d
        or (isinstance(layer.module, QuantConv2d) and not _packed_binary(layer.module, layer.flow.first))
    )
)
def _convolution(layer: _Layer) -> list[dict[str, Any]]:
    op = _conv_op(layer.name, layer.module, layer.flow.first, layer.tensors)
    layer.flow.first, layer.flow.real_maps = False, True
    return [op]


@_handles(lambda layer: isinstance(layer.module, QuantLinear) and not _packed_binary(layer.module, layer.flow.first))
def _quantized_linear(layer: _Layer) -> list[dict[str, Any]]:
    layer.flow.first = False
    return [_product_op(layer.name, layer.module, layer.tensors)]


@_handles(lambda layer: isinstance(layer.module, (QuantLinear, QuantConv2d)))
def _binary_layer(layer: _Layer) -> list[dict[str, Any]]:
    m, flow, ops = layer.module, layer.flow, []
    conv = isinstance(m, QuantConv2d)
    if not flow.first and (not layer.ops or layer.ops[-1]["op"] != "threshold"):
        # a sign of real values (a shortcut block's output): a threshold at 0
        ops.append(
            _zero_threshold(
                layer.name, m.in_channels if conv else m.in_features, "nhwc" if conv else "rows", layer.tensors
            )
        )
    ops.append(_matmul_op(layer.name, m, flow.first, layer.tensors))
    flow.first, flow.real_maps = False, conv  # the packed path's conv outputs are real NHWC maps
    return ops


@_handles(lambda layer: isinstance(layer.module, RealShortcut))
def _shortcut_block(layer: _Layer) -> list[dict[str, Any]]:
    op = _residual_op(layer.name, layer.module, layer.flow, layer.tensors, layer.shapes)
    layer.flow.first = False  # the block hands on the real stream it took
    return [op]


@_handles(lambda layer: isinstance(layer.module, nn.AvgPool2d))
def _avgpool(layer: _Layer) -> list[dict[str, Any]]:
    return [_avgpool_op(layer.name, layer.module)]


@_handles(lambda layer: type(layer.module) is nn.Linear)
def _float_linear(layer: _Layer) -> list[dict[str, Any]]:
    name, m = layer.name, layer.module
    layer.tensors[f"{name}.weight"] = m.weight.detach().float().contiguous()
    op = {"op": "linear", "weight": f"{name}.weight", "layer": name}
    if m.bias is not None:
        layer.tensors[f"{name}.bias"] = m.bias.detach().float().clone()
        op["bias"] = f"{name}.bias"
    layer.flow.first = False
    return [op]


@_handles(lambda layer: isinstance(layer.module, nn.ReLU))
def _relu(layer: _Layer) -> list[dict[str, Any]]:
    return [{"op": "relu", "layer": layer.name}]


@_handles(lambda layer: isinstance(layer.module, nn.MaxPool2d))
def _maxpool(layer: _Layer) -> list[dict[str, Any]]:
    m = layer.module
    return [{"op": "maxpool", "kernel": m.kernel_size, "stride": m.stride, "layer": layer.name}]


def _feeds_sign(m: nn.Module | None) -> bool:
    return isinstance(m, (QuantLinear, QuantConv2d)) and _is_sign(m.input_quantizer)


@_handles(lambda layer: isinstance(layer.module, nn.modules.batchnorm._BatchNorm) and layer.module.track_running_stats)
def _batchnorm(layer: _Layer) -> list[dict[str, Any]]:
    """Before a sign: the sign's threshold (per channel, or per position once flattened); on real
    feature maps or at the output: an affine map."""
    name, m, flow, following = layer.name, layer.module, layer.flow, layer.following
    nxt = following[0] if following else None
    if _feeds_sign(nxt):
        flow.real_maps = False
        return [_threshold(name, m, "nhwc" if isinstance(nxt, QuantConv2d) else "rows", layer.tensors)]
    if (
        isinstance(nxt, nn.Flatten)
        and len(following) > 1
        and isinstance(following[1], QuantLinear)
        and _feeds_sign(following[1])
    ):
        flow.real_maps = False
        spatial = math.prod(layer.shapes[name][2:]) if name in layer.shapes else 1
        return [_threshold(name, m, "flat", layer.tensors, spatial)]
    if not (flow.real_maps or nxt is None or isinstance(m, nn.BatchNorm1d)):
        raise ExportError(f"layer {name}: batch norm must feed a sign-input layer or end the model")
    scale, shift = batchnorm_affine(m)
    layer.tensors[f"{name}.scale"], layer.tensors[f"{name}.shift"] = scale.float(), shift.float()
    # per channel on real feature maps (before a real-input layer); per feature at the output
    kind = "channel_affine" if flow.real_maps else "affine"
    return [{"op": kind, "scale": f"{name}.scale", "shift": f"{name}.shift", "layer": name}]


def _residual_op(name: str, m: RealShortcut, flow: _Flow, tensors: dict[str, torch.Tensor], shapes: dict):
    """Bi-Real's block: its branch and its shortcut as op lists of their own, summed."""
    if not isinstance(m.act, nn.Identity):
        raise ExportError(f"layer {name}: a shortcut block's activation {type(m.act).__name__} is not supported")
    parts = {}
    for part in ("branch", "shortcut"):
        module = getattr(m, part)
        children = list(module.named_children()) if isinstance(module, nn.Sequential) else [("0", module)]
        inner = _Flow(first=False, real_maps=flow.real_maps)
        parts[part] = _export_layers([(f"{name}.{part}.{c}", layer) for c, layer in children], inner, tensors, shapes)
    return {"op": "residual", "layer": name, **parts}


def _avgpool_op(name: str, m: nn.AvgPool2d) -> dict[str, Any]:
    size = m.kernel_size if isinstance(m.kernel_size, int) else m.kernel_size[0]
    square = {size} == set(m.kernel_size if isinstance(m.kernel_size, tuple) else [size])
    stride = m.stride if isinstance(m.stride, int) else (m.stride or [size])[0]
    if not square or stride != size or m.padding not in (0, (0, 0)) or m.ceil_mode or m.divisor_override:
        raise ExportError(
            f"layer {name}: the packed runtime pools averages over square windows with stride = kernel, no padding, "
            f"ceil_mode or divisor_override; got {m}"
        )
    return {"op": "avgpool", "kernel": size, "layer": name}


def _zero_threshold(name: str, channels: int, layout: str, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """sign(x) of a real input (a shortcut block's output), packed: a threshold at 0 per channel."""
    values = {
        "threshold": torch.zeros(channels, dtype=torch.float64),
        "positive": torch.ones(channels, dtype=torch.bool),
        "constant": torch.full((channels,), -1.0, dtype=torch.float64),
    }
    op: dict[str, Any] = {"op": "threshold", "layout": layout, "layer": f"{name}.sign"}
    for key, value in values.items():
        tensors[f"{name}.sign.{key}"] = value
        op[key] = f"{name}.sign.{key}"
    return op


def _conv_op(name: str, m: nn.Conv2d, first: bool, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """A float convolution (``conv``) or a quantized one whose product is a linear op of the runtime
    (``quantized_conv``, see ``runtime.maps``)."""
    _check_geometry(name, m)
    op: dict[str, Any] = {
        "layer": name,
        "kernel": list(m.kernel_size),
        "stride": m.stride[0],
        "padding": m.padding[0],
        "channels": m.in_channels,
        "out_channels": m.out_channels,
        "first": first,
    }
    if type(m) is nn.Conv2d:
        tensors[f"{name}.weight"] = m.weight.detach().float().contiguous()
        op.update(op="conv", weight=f"{name}.weight")
        if m.bias is not None:
            tensors[f"{name}.bias"] = m.bias.detach().float().clone()
            op["bias"] = f"{name}.bias"
        return op
    op.update(op="quantized_conv", inner=_product_op(name, _Rows(m), tensors))
    return op


def _product_op(name: str, m: QuantLinear | _Rows, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The linear op of a quantized layer that is not a BNN layer, by its weights and inputs:
    XNOR-Net's scaled signs, k-bit grids (QNN, DoReFa), ternary planes, or binary weights on real
    or k-bit inputs (BinaryConnect, BWN)."""
    q = m.input_quantizer
    if q.meta.output_scale:
        return _xnor_op(name, m, tensors)
    if m.weight_quantizer.meta.kind == "int":
        return _grid_op(name, m, tensors)
    if m.weight_quantizer.meta.kind == "ternary":
        return _ternary_op(name, m, tensors)
    return _weight_only_op(name, m, tensors, q.meta if _is_grid(q) else None)


class _Rows:
    """A convolution's weights and quantizers as the linear op that holds them: weight (O, C kh kw)."""

    def __init__(self, conv: QuantConv2d) -> None:
        self.weight = conv.weight.reshape(conv.out_channels, -1)
        self.in_features = self.weight.shape[1]
        self.bias, self.weight_quantizer, self.input_quantizer = conv.bias, conv.weight_quantizer, conv.input_quantizer


def _check_geometry(name: str, m: nn.Conv2d) -> None:
    if (
        m.groups != 1
        or m.dilation != (1, 1)
        or m.padding_mode != "zeros"
        or isinstance(m.padding, str)
        or m.stride[0] != m.stride[1]
        or m.padding[0] != m.padding[1]
    ):
        raise ExportError(
            f"layer {name}: the packed convolution supports groups=1, dilation=1, zero padding "
            f"and square stride and padding"
        )


def _is_grid(q: Any) -> bool:
    """Inputs on an unsigned k-bit grid over [lo, hi] (DoReFa's activations)."""
    meta = q.meta
    return meta.kind == "int" and meta.grid is not None and not meta.signed and not meta.stochastic


def _weight_only_op(
    name: str, m: QuantLinear, tensors: dict[str, torch.Tensor], grid: Any = None, xnor: bool = False
) -> dict[str, Any]:
    """Binary weights w = alpha_o sign(W) (alpha 1 for plain sign weights) times real inputs
    (sign_weight_linear), inputs on a k-bit grid (codes_linear: bit-serial) or XNOR-Net's scaled
    signs of the inputs (xnor_linear)."""
    q = m.weight_quantizer
    if q.meta.kind != "binary" or (grid is None and not xnor and m.input_quantizer.meta.kind != "float"):
        raise ExportError(
            f"layer {name}: the packed runtime has no product for weights {q} on {m.input_quantizer} inputs; it runs "
            f"sign weights on sign inputs (BNN), binary or ternary weights on real inputs (BinaryConnect, BWN, "
            f"TernaryConnect), binary weights on k-bit grids (DoReFa), k-bit weights on k-bit inputs (QNN) and "
            f"XNOR-Net's scaled signs"
        )
    with torch.no_grad():  # a stochastic quantizer's most probable weights, as the binary evaluation mode uses
        values = q.deterministic()(m.weight).detach().float()
    alpha = values.abs().amax(1)
    if not torch.equal(values, alpha[:, None] * torch.where(values >= 0, 1.0, -1.0)):
        raise ExportError(f"layer {name}: weights {q} are not one scale per output times a sign")
    op: dict[str, Any] = {"op": "sign_weight_linear", "weight": f"{name}.weight", "k": m.in_features, "layer": name}
    if grid is not None:
        op.update(op="codes_linear", bits=grid.bits, lo=grid.grid[0], hi=grid.grid[1])
        tensors[f"{name}.weight_sum"] = torch.where(values >= 0, 1.0, -1.0).sum(1).double()
        op["weight_sum"] = f"{name}.weight_sum"
    tensors[f"{name}.weight"] = kernels.pack(values)
    if q.meta.scaled:
        tensors[f"{name}.alpha"] = alpha.contiguous()
        op["alpha"] = f"{name}.alpha"
    if m.bias is not None:
        tensors[f"{name}.bias"] = m.bias.detach().float().clone()
        op["bias"] = f"{name}.bias"
    return op


def _ternary_op(name: str, m: QuantLinear, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Ternary weights alpha_o t, t in {-1, 0, +1} (TWN, TernaryConnect), on real inputs: the +1 and
    -1 positions as two packed planes, x . t = sum of x over the first minus over the second."""
    if m.input_quantizer.meta.kind != "float":
        raise ExportError(f"layer {name}: ternary weights on {m.input_quantizer} inputs; the runtime takes real inputs")
    with torch.no_grad():  # a stochastic quantizer's most probable weights
        values = m.weight_quantizer.deterministic()(m.weight).detach().float()
    alpha = values.abs().amax(1)
    t = torch.sign(values)
    if not torch.equal(values, alpha[:, None] * t):
        raise ExportError(f"layer {name}: weights {m.weight_quantizer} are not one scale per output times -1, 0, +1")
    tensors[f"{name}.plus"], tensors[f"{name}.minus"] = kernels.pack(t > 0), kernels.pack(t < 0)
    tensors[f"{name}.alpha"] = alpha.contiguous()
    op: dict[str, Any] = {
        "op": "ternary_linear",
        "plus": f"{name}.plus",
        "minus": f"{name}.minus",
        "alpha": f"{name}.alpha",
        "k": m.in_features,
        "layer": name,
    }
    if m.bias is not None:
        tensors[f"{name}.bias"] = m.bias.detach().float().clone()
        op["bias"] = f"{name}.bias"
    return op


def _xnor_op(name: str, m: QuantLinear, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """XNOR-Net's fully connected layer: sign(x) against alpha_o sign(W) by popcounts, times the
    input's scale K = mean |x| per sample, computed from x at run time as the layer does."""
    op = _weight_only_op(name, m, tensors, xnor=True)
    op["op"] = "xnor_linear"
    return op


def _input_grid(name: str, q: Any) -> dict[str, Any]:
    """How a k-bit input quantizer maps x to codes u (the runtime repeats its arithmetic): affine,
    u = round(clip((x - lo) / (hi - lo), 0, 1) levels), x_q = lo + (hi - lo) u / levels; or
    symmetric, u = round(clip(x / r, -1, 1) n) + n, x_q = (u - n) r / n."""
    meta = q.meta
    if meta.kind == "int" and meta.grid is not None and not meta.signed and not meta.stochastic:
        return {"kind": "affine", "lo": meta.grid[0], "hi": meta.grid[1], "levels": 2**meta.bits - 1, "bits": meta.bits}
    if meta.kind == "int" and meta.signed and not meta.stochastic and "range" in q.config:
        return {"kind": "symmetric", "range": q.config["range"], "n": 2 ** (meta.bits - 1) - 1, "bits": meta.bits}
    raise ExportError(f"layer {name}: input quantizer {q} is not a k-bit grid the packed runtime runs")


def _grid_op(name: str, m: QuantLinear, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """k-bit weights on an affine grid times k-bit inputs (QNN): codes of both, bit-serial."""
    with torch.no_grad():
        values = m.weight_quantizer.deterministic()(m.weight).detach().double()
    levels = torch.unique(values)
    step = float((levels[1:] - levels[:-1]).min()) if len(levels) > 1 else 1.0
    codes = torch.round((values - levels[0]) / step)
    if not torch.allclose(levels[0] + step * codes, values, rtol=0, atol=1e-6) or codes.max() > 255:
        raise ExportError(f"layer {name}: weights {m.weight_quantizer} do not lie on an affine grid of <= 256 levels")
    tensors[f"{name}.codes"] = codes.to(torch.uint8)
    op: dict[str, Any] = {
        "op": "grid_linear",
        "codes": f"{name}.codes",
        "w_lo": float(levels[0]),
        "w_step": step,
        "w_bits": max(1, int(codes.max()).bit_length()),
        "input": _input_grid(name, m.input_quantizer),
        "layer": name,
    }
    if m.bias is not None:
        tensors[f"{name}.bias"] = m.bias.detach().float().clone()
        op["bias"] = f"{name}.bias"
    return op


def _matmul_op(name: str, m: nn.Module, first: bool, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """A BNN layer (``_packed_binary``): sign weights on sign inputs, or on the real or 8-bit image."""
    sign_input = _is_sign(m.input_quantizer)
    w = m.weight.detach()
    op: dict[str, Any] = {"layer": name}
    if m.bias is not None:
        tensors[f"{name}.bias"] = m.bias.detach().float().clone()
        op["bias"] = f"{name}.bias"
    if isinstance(m, QuantLinear):
        tensors[f"{name}.weight"] = kernels.pack(w)
        op.update(op="binary_linear" if sign_input else "real_linear", weight=f"{name}.weight", k=m.in_features)
        if not sign_input:
            tensors[f"{name}.weight_sum"] = torch.where(w >= 0, 1.0, -1.0).sum(1).double()
            op["weight_sum"] = f"{name}.weight_sum"
        return op
    _check_geometry(name, m)
    op.update(
        kernel=list(m.kernel_size),
        stride=m.stride[0],
        padding=m.padding[0],
        channels=m.in_channels,
        out_channels=m.out_channels,
    )
    if not sign_input:
        tensors[f"{name}.weight"] = kernels.pack(w.reshape(w.shape[0], -1))
        op.update(op="real_conv", weight=f"{name}.weight")
        return op
    tensors[f"{name}.weight"] = kernels.pack_filters(w)
    op.update(op="binary_conv", weight=f"{name}.weight")
    return op
