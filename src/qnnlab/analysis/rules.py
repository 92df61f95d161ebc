"""Cost rules: one per layer type, turning a recorded call (shapes, quantizer metadata) into
operation counts per phase. Phases: forward, backward_input, backward_weight, update (the
update is counted per parameter by ``optimizer_rule``).

Counts are keyed (phase, op, kind): op ``mac`` with a MAC kind (``kinds.mac_kind``), or one of
add, mul, cmp, shift, div, sqrt, exp, rng with an operand width. A new layer type needs one
rule here; a leaf module without a rule is reported as not counted.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Callable

from torch import nn

from qnnlab.analysis.kinds import gradient_kind, mac_kind, operand_kind
from qnnlab.models.vision import RealShortcut
from qnnlab.nn import DropConnectLinear, Maxout, ResidualSum, RPReLU, ShiftBatchNorm1d, ShiftBatchNorm2d
from qnnlab.nn.quantized import QuantizedModule
from qnnlab.nn.rnn import QuantLSTM, QuantRNNBase
from qnnlab.quant import Quantizer

FWD, BWD_IN, BWD_W, UPDATE = "forward", "backward_input", "backward_weight", "update"
PHASES = (FWD, BWD_IN, BWD_W, UPDATE)


@dataclasses.dataclass
class Call:
    """One forward call of a module, as the profiler's hooks saw it."""

    name: str
    module: nn.Module
    input_shapes: list[tuple[int, ...]]
    output_shape: tuple[int, ...]
    input_requires_grad: bool
    train: bool

    @property
    def in_numel(self) -> int:
        return math.prod(self.input_shapes[0]) if self.input_shapes else 0

    @property
    def out_numel(self) -> int:
        return math.prod(self.output_shape)


@dataclasses.dataclass
class LayerCost:
    name: str
    type: str
    counts: Counter = dataclasses.field(default_factory=Counter)  # (phase, op, kind) -> count
    memory: Counter = dataclasses.field(default_factory=Counter)  # what -> bits
    traffic: Counter = dataclasses.field(default_factory=Counter)  # phase -> bits moved
    info: dict = dataclasses.field(default_factory=dict)
    counted: bool = True

    def add(self, phase: str, op: str, kind: str, count: float) -> None:
        if count:
            self.counts[(phase, op, kind)] += count


Rule = Callable[[Call, LayerCost], None]
RULES: list[tuple[type | tuple[type, ...], Rule]] = []


def rule(*types: type) -> Callable[[Rule], Rule]:
    def register(fn: Rule) -> Rule:
        RULES.append((types, fn))
        return fn

    return register


def find_rule(module: nn.Module) -> Rule | None:
    for types, fn in RULES:
        if isinstance(module, types):
            return fn
    return None


def quantizer_ops(cost: LayerCost, phase: str, q: Quantizer | None, n: int) -> None:
    """Per-element work of applying a quantizer (forward) to n values."""
    if q is None or n == 0:
        return
    meta = q.meta
    if meta.kind == "float" or meta.backward:
        return
    if meta.kind == "half":
        cost.add(phase, "cmp", "fp32", n)
        return
    if meta.kind == "binary":
        cost.add(phase, "cmp", "fp32", n)  # the sign
    elif meta.kind == "ternary":
        cost.add(phase, "cmp", "fp32", 2 * n)
    elif meta.kind == "pow2":
        cost.add(phase, "cmp", "fp32", 2 * n)  # exponent rounding and range
    elif meta.kind == "levels":
        cost.add(phase, "cmp", "fp32", n * max(1, meta.bits))  # binary search among the levels
    else:  # uniform / fixed grid: scale, round, clip
        cost.add(phase, "mul", "fp32", n)
        cost.add(phase, "add", "fp32", n)
        cost.add(phase, "cmp", "fp32", 2 * n)
    if meta.stochastic:
        cost.add(phase, "rng", "int32", n)
        cost.add(phase, "cmp", "fp32", n)
    if meta.scaled:  # a mean |x| per channel and the product with it
        cost.add(phase, "add", "fp32", n)
        cost.add(phase, "mul", "fp32", n)


def estimator_ops(cost: LayerCost, phase: str, q: Quantizer | None, n: int) -> None:
    """Backward through a quantizer: the estimator's mask or derivative, applied to n gradients."""
    if q is None or n == 0 or q.meta.kind == "float" or q.meta.backward:
        return
    for op, per_value in q.estimator.backward_ops.items():
        cost.add(phase, op, "fp32", per_value * n)


def grad_quantizer_ops(cost: LayerCost, q: Quantizer | None, n: int) -> None:
    if q is None or not q.meta.backward:
        return
    cost.add(BWD_IN, "cmp", "fp32", 2 * n)
    cost.add(BWD_IN, "mul", "fp32", n)
    if q.meta.stochastic:
        cost.add(BWD_IN, "rng", "int32", n)


def layer_quantizers(m: nn.Module) -> tuple[Quantizer | None, Quantizer | None, Quantizer | None]:
    """(weight, input, output-gradient) quantizers of a Linear or Conv layer; None where it is float."""
    if not isinstance(m, QuantizedModule):
        return None, None, None
    acts = m.activation_quantizers()
    return m.weight_quantizers_by_name().get("weight"), acts.get("input"), acts.get("grad")


def _weight_bits(q: Quantizer) -> int:
    return 32 if q.meta.kind == "float" else q.meta.bits


@rule(nn.Linear, nn.Conv2d)
def matmul_rule(call: Call, cost: LayerCost) -> None:
    """y = x W^T (+ b): MACs = outputs x fan-in. Backward: the same count for dL/dx (skipped for a
    layer whose input needs no gradient, i.e. the first layer) and for dL/dW, whose products take
    the update's own input quantizer where the layer has one (``update_input``)."""
    m = call.module
    wq, iq, gq = layer_quantizers(m)
    w_kind = operand_kind(wq.meta) if wq else "fp32"
    i_kind = operand_kind(iq.meta) if iq else "fp32"
    g_kind = gradient_kind(gq.meta) if gq else "fp32"
    fan_in = m.weight[0].numel()
    macs = call.out_numel * fan_in
    cost.info.update(
        weight=w_kind,
        input=i_kind,
        grad=g_kind,
        fan_in=fan_in,
        accumulator_bits=accumulator_bits(mac_kind(i_kind, w_kind), fan_in),
    )
    cost.add(FWD, "mac", mac_kind(i_kind, w_kind), macs)
    if m.bias is not None:
        cost.add(FWD, "add", "fp32", call.out_numel)
    quantizer_ops(cost, FWD, wq, m.weight.numel())
    quantizer_ops(cost, FWD, iq, call.in_numel)
    if iq is not None and iq.meta.output_scale:
        positions = call.out_numel // m.weight.shape[0]
        cost.add(FWD, "mul", "fp32", call.out_numel)  # XNOR-Net's K times each output
        cost.add(FWD, "add", "fp32", call.in_numel + positions * (fan_in // m.weight.shape[1]))  # mean|I|, box filter
    if isinstance(m, DropConnectLinear) and call.train:
        batch = call.in_numel // m.in_features
        cost.add(FWD, "rng", "int32", batch * m.weight.numel())
        cost.add(FWD, "mul", "fp32", batch * m.weight.numel())
    w_bits, i_bits = _weight_bits(wq) if wq else 32, _operand_bits(i_kind)
    bias_bits = 32 * m.bias.numel() if m.bias is not None else 0
    cost.memory["weights_latent"] += 32 * m.weight.numel() + bias_bits
    cost.memory["weights_deployed"] += w_bits * m.weight.numel() + bias_bits
    if wq is not None and wq.meta.scaled:
        cost.memory["weights_deployed"] += 32 * m.weight.shape[0]
    cost.traffic[FWD] += (32 if call.train else w_bits) * m.weight.numel() + 32 * call.in_numel + 32 * call.out_numel
    if not call.train:
        return
    grad_quantizer_ops(cost, gq, call.out_numel)
    cost.memory["activations"] += (
        i_bits * call.in_numel + (1 if iq is not None and i_kind != "fp32" else 0) * call.in_numel
    )
    if call.input_requires_grad:
        cost.add(BWD_IN, "mac", mac_kind(g_kind, w_kind), macs)
        estimator_ops(cost, BWD_IN, iq, call.in_numel)
        cost.traffic[BWD_IN] += w_bits * m.weight.numel() + 32 * (call.out_numel + call.in_numel)
    uq = m.activation_quantizers().get("update_input") if isinstance(m, QuantizedModule) else None
    if uq is not None and uq.meta.kind != "float":  # the update multiplies Q_u(x), quantized on the way
        quantizer_ops(cost, BWD_W, uq, call.in_numel)
        cost.info["update_input"] = operand_kind(uq.meta)
    u_kind = cost.info.get("update_input", i_kind)
    cost.add(BWD_W, "mac", mac_kind(g_kind, u_kind), macs)
    estimator_ops(cost, BWD_W, wq, m.weight.numel())
    if m.bias is not None:
        cost.add(BWD_W, "add", "fp32", call.out_numel)
    cost.traffic[BWD_W] += i_bits * call.in_numel + 32 * (call.out_numel + m.weight.numel())


def accumulator_bits(kind: str, fan_in: int) -> int:
    """Bits a sum of ``fan_in`` products of ``kind`` needs without overflow: the product's bits
    plus log2(fan_in) (a popcount of fan_in bits needs log2(fan_in) + 1); floats accumulate in
    their own format."""
    if kind in ("fp32", "fp16") or kind.startswith(("add_fp", "shift_fp")):
        return 32 if "32" in kind else 16
    grow = math.ceil(math.log2(max(fan_in, 2)))
    if kind == "binary":
        return grow + 1
    operand = int(kind.rsplit("int", 1)[1]) if "int" in kind else 8
    product = operand if kind.startswith(("add_", "shift_")) else 2 * operand
    return min(64, product + grow)


def _operand_bits(kind: str) -> int:
    return {"fp32": 32, "fp16": 16, "binary": 1, "ternary": 2, "pow2": 8}.get(kind) or int(kind[3:])


@rule(nn.modules.batchnorm._BatchNorm)
def batchnorm_rule(call: Call, cost: LayerCost) -> None:
    """Training: mean (n adds), centring (n), variance (n mul, n add), normalising (n mul), affine
    (n mul, n add), and per channel 3 divisions and a square root. Inference folds it into n mul
    and n add. Shift-based BN turns every multiplication into a shift and needs no division or
    square root (powers of two throughout). Backward: 4n mul and 4n add to the input, 2n for
    gamma and beta."""
    n, channels = call.in_numel, call.module.num_features
    shift = isinstance(call.module, (ShiftBatchNorm1d, ShiftBatchNorm2d))
    mul = "shift" if shift else "mul"
    cost.info["variant"] = "shift" if shift else "float"
    if call.train:
        cost.add(FWD, "add", "fp32", 4 * n)
        cost.add(FWD, mul, "fp32", 3 * n)
        if shift:
            cost.add(FWD, "shift", "fp32", 3 * channels)
        else:
            cost.add(FWD, "div", "fp32", 3 * channels)
            cost.add(FWD, "sqrt", "fp32", channels)
        cost.add(BWD_IN, mul, "fp32", 4 * n)
        cost.add(BWD_IN, "add", "fp32", 4 * n)
        cost.add(BWD_W, mul, "fp32", n)
        cost.add(BWD_W, "add", "fp32", 2 * n)
        cost.memory["activations"] += 32 * n
        cost.traffic[FWD] += 64 * n
        cost.traffic[BWD_IN] += 96 * n
    else:
        cost.add(FWD, mul, "fp32", n)
        cost.add(FWD, "add", "fp32", n)
        cost.traffic[FWD] += 64 * n
    cost.memory["weights_latent"] += 32 * 2 * channels
    cost.memory["weights_deployed"] += 32 * 2 * channels


@rule(nn.ReLU, nn.Hardtanh)
def activation_rule(call: Call, cost: LayerCost) -> None:
    """ReLU: one comparison per element (forward) and a mask (backward); Hardtanh: two each."""
    per = 2 if isinstance(call.module, nn.Hardtanh) else 1
    cost.add(FWD, "cmp", "fp32", per * call.in_numel)
    if call.train:
        cost.add(BWD_IN, "cmp", "fp32", per * call.in_numel)
        cost.memory["activations"] += call.in_numel  # a 1-bit mask


@rule(nn.PReLU)
def prelu_rule(call: Call, cost: LayerCost) -> None:
    """max(0, x) + a min(0, x): a comparison and a multiplication per element; backward the same
    to the input, and a multiplication and an addition per element for the slope's gradient."""
    n = call.in_numel
    cost.add(FWD, "cmp", "fp32", n)
    cost.add(FWD, "mul", "fp32", n)
    if call.train:
        cost.add(BWD_IN, "cmp", "fp32", n)
        cost.add(BWD_IN, "mul", "fp32", n)
        cost.add(BWD_W, "mul", "fp32", n)
        cost.add(BWD_W, "add", "fp32", n)
        cost.memory["activations"] += 32 * n


@rule(RPReLU)
def rprelu_rule(call: Call, cost: LayerCost) -> None:
    """The two learned shifts around its PReLU (counted by the PReLU rule): an addition each per
    element forward, and per element one addition for each shift's gradient (a sum over positions)."""
    n = call.in_numel
    cost.add(FWD, "add", "fp32", 2 * n)
    if call.train:
        cost.add(BWD_W, "add", "fp32", 2 * n)


@rule(Maxout)
def maxout_rule(call: Call, cost: LayerCost) -> None:
    """The maximum of k pieces: k - 1 comparisons per output; backward routes each gradient to its
    argmax (one comparison per input to rebuild the mask)."""
    cost.add(FWD, "cmp", "fp32", call.in_numel - call.out_numel)
    if call.train:
        cost.add(BWD_IN, "cmp", "fp32", call.in_numel)
        cost.memory["activations"] += call.in_numel


@rule(nn.Dropout)
def dropout_rule(call: Call, cost: LayerCost) -> None:
    if call.train and call.module.p > 0:
        cost.add(FWD, "rng", "int32", call.in_numel)
        cost.add(FWD, "mul", "fp32", call.in_numel)
        cost.add(BWD_IN, "mul", "fp32", call.in_numel)
        cost.memory["activations"] += call.in_numel


@rule(nn.MaxPool2d)
def maxpool_rule(call: Call, cost: LayerCost) -> None:
    k = call.module.kernel_size
    area = k * k if isinstance(k, int) else math.prod(k)
    cost.add(FWD, "cmp", "fp32", call.out_numel * (area - 1))
    if call.train:
        cost.add(BWD_IN, "add", "fp32", call.out_numel)
        cost.memory["activations"] += 8 * call.out_numel  # argmax indices


@rule(nn.AdaptiveAvgPool2d, nn.AvgPool2d)
def avgpool_rule(call: Call, cost: LayerCost) -> None:
    cost.add(FWD, "add", "fp32", call.in_numel)
    cost.add(FWD, "mul", "fp32", call.out_numel)
    if call.train:
        cost.add(BWD_IN, "mul", "fp32", call.in_numel)


@rule(nn.Flatten, nn.Identity, nn.Sequential, RealShortcut)
def free_rule(call: Call, cost: LayerCost) -> None:
    """Reshapes and containers cost nothing themselves."""


@rule(ResidualSum)
def residual_rule(call: Call, cost: LayerCost) -> None:
    """The residual sum of a ResNet block (its layers are counted on their own)."""
    cost.add(FWD, "add", "fp32", call.out_numel)


@rule(nn.Embedding)
def embedding_rule(call: Call, cost: LayerCost) -> None:
    dim = call.module.embedding_dim
    cost.memory["weights_latent"] += 32 * call.module.weight.numel()
    cost.memory["weights_deployed"] += 32 * call.module.weight.numel()
    cost.traffic[FWD] += 32 * call.out_numel
    if call.train:
        cost.add(BWD_W, "add", "fp32", call.in_numel * dim)


@rule(QuantRNNBase)
def rnn_rule(call: Call, cost: LayerCost) -> None:
    """Per time step and layer: gates x W_ih^T and h W_hh^T (MACs), then per hidden unit the gate
    nonlinearities (a sigmoid or tanh as an exponential, an add and a division) and the state
    products. Backward: twice the MACs (inputs and weights) and twice the element-wise work."""
    m = call.module
    steps_batch = call.in_numel // m.input_size
    gates = m.gates
    lstm = isinstance(m, QuantLSTM)
    nonlinear = 5 if lstm else 3
    for layer in range(m.num_layers):
        width = m.input_size if layer == 0 else m.hidden_size
        wq = m.weight_quantizers[f"weight_ih_l{layer}"]
        iq = m.input_quantizers[layer]
        sq = m.state_quantizers[layer]
        w_kind, i_kind, s_kind = operand_kind(wq.meta), operand_kind(iq.meta), operand_kind(sq.meta)
        if layer > 0 and i_kind == "fp32":  # the input is the previous layer's quantized state
            i_kind = operand_kind(m.state_quantizers[layer - 1].meta)
        units = steps_batch * m.hidden_size
        for operand, fan in ((i_kind, width), (s_kind, m.hidden_size)):
            cost.add(FWD, "mac", mac_kind(operand, w_kind), units * gates * fan)
            if call.train:
                cost.add(BWD_IN, "mac", mac_kind("fp32", w_kind), units * gates * fan)
                cost.add(BWD_W, "mac", mac_kind("fp32", operand), units * gates * fan)
        cost.add(FWD, "exp", "fp32", units * nonlinear)
        cost.add(FWD, "div", "fp32", units * nonlinear)
        cost.add(FWD, "add", "fp32", units * (nonlinear + 2 * gates + (1 if lstm else 2)))
        cost.add(FWD, "mul", "fp32", units * 3)
        quantizer_ops(cost, FWD, sq, units)
        quantizer_ops(cost, FWD, iq, steps_batch * width)
        for name in (f"weight_ih_l{layer}", f"weight_hh_l{layer}"):
            p = getattr(m, name)
            quantizer_ops(cost, FWD, m.weight_quantizers[name], p.numel())
            cost.memory["weights_latent"] += 32 * p.numel()
            cost.memory["weights_deployed"] += _weight_bits(m.weight_quantizers[name]) * p.numel()
        if call.train:
            cost.add(BWD_IN, "mul", "fp32", 2 * units * (nonlinear + 3))
            cost.add(BWD_IN, "add", "fp32", 2 * units * (nonlinear + 2))
            cost.memory["activations"] += 32 * units * (gates + 2)
    if m.bias:
        cost.memory["weights_latent"] += 32 * 2 * gates * m.hidden_size * m.num_layers
        cost.memory["weights_deployed"] += 32 * 2 * gates * m.hidden_size * m.num_layers


def optimizer_rule(optimizer: str, cost: LayerCost, n: int, clipped: bool, binary: bool) -> None:
    """Update of n parameters. SGD with momentum: 2 mul, 2 add. Adam: 6 mul, 4 add, 1 sqrt, 1 div
    per weight. Shift-based AdaMax: 5 shifts, 3 adds, 1 comparison (the max). Bop on binary
    weights: 2 mul, 1 add for the momentum, 2 comparisons for the flip. Clipping: 2 comparisons.
    State: SGD 32 bits, Adam and AdaMax 64 bits, Bop 32 bits per binary weight."""
    if optimizer == "sgd":
        cost.add(UPDATE, "mul", "fp32", 2 * n)
        cost.add(UPDATE, "add", "fp32", 2 * n)
        state = 32
    elif optimizer == "shift_adamax":
        cost.add(UPDATE, "shift", "fp32", 5 * n)
        cost.add(UPDATE, "add", "fp32", 3 * n)
        cost.add(UPDATE, "cmp", "fp32", n)
        state = 64
    elif optimizer == "bop" and binary:
        cost.add(UPDATE, "mul", "fp32", 2 * n)
        cost.add(UPDATE, "add", "fp32", n)
        cost.add(UPDATE, "cmp", "fp32", 2 * n)
        state = 32
    elif optimizer in ("adam", "bop"):
        cost.add(UPDATE, "mul", "fp32", 6 * n)
        cost.add(UPDATE, "add", "fp32", 4 * n)
        cost.add(UPDATE, "sqrt", "fp32", n)
        cost.add(UPDATE, "div", "fp32", n)
        state = 64
    else:
        raise ValueError(f"unknown optimizer {optimizer!r}; use sgd, adam, shift_adamax or bop")
    if clipped:
        cost.add(UPDATE, "cmp", "fp32", 2 * n)
    cost.memory["gradients"] += 32 * n
    cost.memory["optimizer_state"] += state * n
    cost.traffic[UPDATE] += (32 * 3 + 2 * state) * n  # read w, g, state; write w, state
