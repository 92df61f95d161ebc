"""``profile(model, example_input)``: every operation of forward, backward and update, counted by
kind and width, priced in energy, with memory, the hidden high-precision costs, XNOR-Net's
speed-up model and binary kernel repetition."""

from __future__ import annotations

import copy
import dataclasses
import math
from collections import Counter
from typing import Any

import torch
from torch import nn

from qnnlab.analysis.energy import EnergyTable
from qnnlab.analysis.rules import (
    BWD_IN,
    FWD,
    PHASES,
    UPDATE,
    Call,
    LayerCost,
    find_rule,
    layer_quantizers,
    optimizer_rule,
)
from qnnlab.optim.rules import binary_weights
from qnnlab.quant import Estimator, Quantizer

MEMORY_KINDS = ("weights_latent", "weights_deployed", "activations", "gradients", "optimizer_state")
WORD_BITS = 64


@dataclasses.dataclass
class Profile:
    layers: list[LayerCost]
    calls: dict[str, Call]
    energy: EnergyTable
    train: bool
    optimizer: str | None
    memory_level: str = "dram"
    measured: dict[str, float] = dataclasses.field(default_factory=dict)

    def _count(self, phase: str | None, op: str | None, kind: str | None) -> float:
        if phase is not None and phase not in PHASES:
            raise ValueError(f"phase {phase!r}; use one of {', '.join(PHASES)}")
        return sum(
            n
            for layer in self.layers
            for (p, o, k), n in layer.counts.items()
            if (phase is None or p == phase) and (op is None or o == op) and (kind is None or k == kind)
        )

    def macs(self, phase: str | None = None, kind: str | None = None) -> int:
        """Multiply-accumulates of matrix products and convolutions (element-wise work is not a MAC)."""
        return int(self._count(phase, "mac", kind))

    def ops(self, phase: str | None = None, op: str | None = None, kind: str | None = None) -> int:
        """Operations other than MACs (add, mul, cmp, shift, div, sqrt, exp, rng), filtered."""
        if op == "mac":
            return self.macs(phase, kind)
        return int(
            sum(
                n
                for layer in self.layers
                for (p, o, k), n in layer.counts.items()
                if o != "mac"
                and (phase is None or p == phase)
                and (op is None or o == op)
                and (kind is None or k == kind)
            )
        )

    def _op_energy(self, op: str, kind: str, layer: LayerCost | None = None) -> float:
        """pJ of one op; a MAC's accumulation priced at the layer's accumulator width (32 if unknown)."""
        if op == "mac":
            return self.energy.mac(kind, layer.info.get("accumulator_bits", 32) if layer else 32)
        return self.energy.price(op, kind)

    def compute_energy_pj(self, phase: str | None = None, layer: LayerCost | None = None) -> float:
        layers = [layer] if layer is not None else self.layers
        return sum(
            n * self._op_energy(o, k, lc)
            for lc in layers
            for (p, o, k), n in lc.counts.items()
            if phase is None or p == phase
        )

    def memory_energy_pj(self, phase: str | None = None) -> float:
        bits = sum(n for layer in self.layers for p, n in layer.traffic.items() if phase is None or p == phase)
        return bits * self.energy.memory_bit(self.memory_level)

    def energy_pj(self, phase: str | None = None) -> float:
        """Compute energy plus the memory traffic of ``phase`` (default: all phases), in pJ."""
        return self.compute_energy_pj(phase) + self.memory_energy_pj(phase)

    def memory_bits(self, what: str | None = None) -> int | dict[str, int]:
        """Bits of weights_latent, weights_deployed, activations (kept for backward), gradients,
        optimizer_state; all of them as a dict when ``what`` is None."""
        totals = {k: int(sum(layer.memory[k] for layer in self.layers)) for k in MEMORY_KINDS}
        if what is None:
            return totals
        if what not in totals:
            raise ValueError(f"memory {what!r}; use one of {', '.join(MEMORY_KINDS)}")
        return totals[what]

    @property
    def not_counted(self) -> list[str]:
        return [f"{layer.name} ({layer.type})" for layer in self.layers if not layer.counted]

    def mac_kinds(self) -> list[str]:
        return sorted({k for layer in self.layers for (_, o, k) in layer.counts if o == "mac"})

    def xnor_speedups(self) -> list[dict[str, Any]]:
        """XNOR-Net's model of a binary convolution's speed-up over float (Rastegari et al. 2016,
        sec. 3.3): S = c N_W N_I / ((1/w) c N_W N_I + N_I) = w c N_W / (c N_W + w), with c input
        channels, N_W kernel area, N_I output positions, w the machine word (64 bits): the binary
        products pack w per operation, and the scaling by K costs one operation per position."""
        rows = []
        for layer in self.layers:
            call = self.calls.get(layer.name)
            if call is None or not isinstance(call.module, nn.Conv2d) or layer.counts[(FWD, "mac", "binary")] == 0:
                continue
            m = call.module
            c, n_w = m.in_channels // m.groups, math.prod(m.kernel_size)
            rows.append(
                {
                    "layer": layer.name,
                    "channels": c,
                    "kernel_area": n_w,
                    "theoretical_speedup": WORD_BITS * c * n_w / (c * n_w + WORD_BITS),
                    "measured_speedup": self.measured.get(layer.name),
                }
            )
        return rows

    def measure_binary_convolutions(self, repeats: int = 5) -> None:
        """Time each binary convolution with the packed kernel against torch's float conv2d on the
        same input (inputs packed beforehand), median of paired repeats; fills measured_speedup."""
        import torch.nn.functional as F

        from qnnlab import kernels
        from qnnlab.timing import paired_ms

        for row in self.xnor_speedups():
            call = self.calls[row["layer"]]
            m = call.module
            if (
                m.groups != 1
                or m.dilation != (1, 1)
                or m.stride[0] != m.stride[1]
                or isinstance(m.padding, str)
                or m.padding[0] != m.padding[1]
            ):
                continue
            x = torch.where(torch.rand(call.input_shapes[0]) < 0.5, -1.0, 1.0)
            w = torch.where(m.weight.detach() >= 0, 1.0, -1.0)
            stride, padding = m.stride[0], m.padding[0]
            packed_x, packed_w = kernels.pack_nhwc(x), kernels.pack_filters(w)
            _, _, speedup = paired_ms(
                lambda: kernels.binary_conv2d_direct(packed_x, packed_w, m.in_channels, m.kernel_size, stride, padding),
                lambda: F.conv2d(x, w, stride=stride, padding=padding),
                repeats,
            )
            self.measured[row["layer"]] = round(speedup, 2)

    def kernel_repetition(self) -> list[dict[str, Any]]:
        """Binary kernel repetition (Hubara et al., QNN paper, sec. 3): a k x k binary 2-D filter has
        only 2^(k k) patterns, so per input channel only the distinct filters among the output
        channels need convolving; each output then sums its channels' results. MACs per sample:
        plain O I P k^2; with reuse sum_i u_i P k^2 + O I P additions (P output positions, u_i the
        distinct filters of input channel i). ``up_to_sign`` also merges a filter with its negation."""
        rows = []
        for layer in self.layers:
            call = self.calls.get(layer.name)
            if call is None or not isinstance(call.module, nn.Conv2d):
                continue
            wq = layer_quantizers(call.module)[0]
            if wq is None or wq.meta.kind != "binary" or call.module.groups != 1:
                continue
            with torch.no_grad():
                signs = wq.deterministic()(call.module.weight) >= 0
            out_c, in_c = signs.shape[:2]
            area = signs[0, 0].numel()
            positions = call.out_numel // call.output_shape[0] // out_c
            bits = signs.reshape(out_c, in_c, area).long()
            codes = (bits << torch.arange(area)).sum(-1)  # (O, I) filter patterns
            canonical = torch.where(bits[..., 0] == 1, codes, (~codes) & ((1 << area) - 1))
            distinct = sum(len(torch.unique(codes[:, i])) for i in range(in_c))
            distinct_sign = sum(len(torch.unique(canonical[:, i])) for i in range(in_c))
            plain = out_c * in_c * positions * area
            reused = distinct * positions * area + out_c * in_c * positions
            rows.append(
                {
                    "layer": layer.name,
                    "filters": out_c * in_c,
                    "distinct_filters": distinct,
                    "distinct_up_to_sign": distinct_sign,
                    "patterns_possible": 2**area,
                    "macs_per_sample": plain,
                    "ops_with_reuse": reused,
                    "saved_fraction": 1 - reused / plain,
                }
            )
        return rows

    def hidden_costs(self) -> list[dict[str, Any]]:
        """The costs that stay in high precision after quantization, ranked by their energy share."""
        total = self.energy_pj()
        items = []

        def item(what: str, energy: float, detail: str, removed_by: str = "") -> None:
            if energy > 0:
                items.append(
                    {
                        "cost": what,
                        "energy_pj": energy,
                        "share": energy / total if total else 0.0,
                        "detail": detail,
                        "removed_by": removed_by,
                    }
                )

        matmuls = [lc for lc in self.layers if any(o == "mac" for (_, o, _) in lc.counts)]
        for label, lc in (
            ("first layer", matmuls[0] if matmuls else None),
            ("last layer", matmuls[-1] if len(matmuls) > 1 else None),
        ):
            if lc is None:
                continue
            kinds = sorted({k for (p, o, k) in lc.counts if o == "mac" and p == FWD})
            if any(k in ("fp32", "fp16") or k.startswith("add_fp") for k in kinds):
                mac_energy = sum(n * self._op_energy(o, k, lc) for (_, o, k), n in lc.counts.items() if o == "mac")
                item(
                    f"{label} ({lc.name}) in high precision",
                    mac_energy,
                    f"{self.macs_of(lc, FWD):,} forward MACs of kind {', '.join(kinds)}",
                    "quantize its input (e.g. uniform:bits=8) and weights",
                )
        bn = [lc for lc in self.layers if "variant" in lc.info]
        if bn:
            divs = sum(lc.counts[(FWD, "div", "fp32")] for lc in bn)
            roots = sum(lc.counts[(FWD, "sqrt", "fp32")] for lc in bn)
            mults = sum(n for lc in bn for (_, o, _), n in lc.counts.items() if o == "mul")
            item(
                "batch norm" + (" in training" if self.train else ""),
                sum(self.compute_energy_pj(layer=lc) for lc in bn),
                f"{int(divs):,} divisions and {int(roots):,} square roots per batch, {int(mults):,} multiplications",
                "shift-based batch norm (norm: shift) turns them into shifts" if mults else "",
            )
        update = self.compute_energy_pj(UPDATE)
        if update:
            roots = self.ops(UPDATE, "sqrt")
            detail = f"{self.optimizer}: {self.ops(UPDATE):,} operations per step"
            if roots:
                detail += f", of which {roots:,} square roots and {self.ops(UPDATE, 'div'):,} divisions"
            item(
                "optimizer update",
                update,
                detail,
                "shift-based AdaMax (optimizer: shift_adamax) or Bop" if roots else "",
            )
        rng = sum(
            n * self.energy.price("rng", k) for lc in self.layers for (_, o, k), n in lc.counts.items() if o == "rng"
        )
        item(
            "random numbers",
            rng,
            f"{self.ops(op='rng'):,} draws per step",
            "deterministic binarization (sign instead of stochastic_sign), no dropout",
        )
        loss = [lc for lc in self.layers if lc.type == "loss"]
        if loss:
            item(
                "softmax and loss",
                self.compute_energy_pj(layer=loss[0]),
                f"{self.ops(op='exp'):,} exponentials in total",
                "squared hinge loss (loss: squared_hinge)",
            )
        item(
            "memory traffic",
            self.memory_energy_pj(),
            f"{sum(n for lc in self.layers for n in lc.traffic.values()):,} bits moved per step at "
            f"{self.energy.memory_bit(self.memory_level):.3g} pJ/bit ({self.memory_level})",
            "fewer bits per weight and activation; on-chip reuse",
        )
        return sorted(items, key=lambda i: -i["energy_pj"])

    @staticmethod
    def macs_of(layer: LayerCost, phase: str) -> int:
        return int(sum(n for (p, o, _), n in layer.counts.items() if p == phase and o == "mac"))

    def to_dict(self) -> dict[str, Any]:
        phases = PHASES if self.train else (FWD,)
        return {
            "energy_source": self.energy.source,
            "train": self.train,
            "optimizer": self.optimizer,
            "phases": {
                p: {
                    "macs": {k: self.macs(p, k) for k in self.mac_kinds() if self.macs(p, k)},
                    "ops": {f"{o}_{k}": int(n) for (o, k), n in sorted(self._ops_by(p).items())},
                    "compute_energy_pj": self.compute_energy_pj(p),
                    "memory_energy_pj": self.memory_energy_pj(p),
                    "energy_pj": self.energy_pj(p),
                }
                for p in phases
            },
            "energy_pj": self.energy_pj(),
            "memory_bits": self.memory_bits(),
            "layers": [
                {
                    "name": lc.name,
                    "type": lc.type,
                    "counted": lc.counted,
                    **lc.info,
                    "counts": [
                        {"phase": p, "op": o, "kind": k, "count": int(n)} for (p, o, k), n in sorted(lc.counts.items())
                    ],
                    "memory_bits": dict(lc.memory),
                    "energy_pj": self.compute_energy_pj(layer=lc),
                }
                for lc in self.layers
            ],
            "not_counted": self.not_counted,
            "hidden_costs": self.hidden_costs(),
            "xnor_speedup": self.xnor_speedups(),
            "kernel_repetition": self.kernel_repetition(),
        }

    def _ops_by(self, phase: str) -> Counter:
        result: Counter = Counter()
        for lc in self.layers:
            for (p, o, k), n in lc.counts.items():
                if p == phase and o != "mac":
                    result[(o, k)] += n
        return result


def _inside_quantizer(name: str, quantizer_prefixes: list[str]) -> bool:
    return any(name == q or name.startswith(q + ".") for q in quantizer_prefixes)


def profile(
    model: nn.Module,
    example_input: torch.Tensor,
    train: bool = True,
    optimizer: str | None = "adam",
    loss: str | None = "cross_entropy",
    clip_latent: bool = False,
    energy: EnergyTable | None = None,
    memory_level: str = "dram",
) -> Profile:
    """Count the operations of one step of ``model`` on ``example_input`` (its first dimension is
    the batch). ``train``: forward, backward and the ``optimizer`` update (sgd, adam,
    shift_adamax, bop); else inference only. ``memory_level``: dram or sram pricing of traffic."""
    if memory_level not in ("dram", "sram"):
        raise ValueError(f"memory_level={memory_level!r}; use dram or sram")
    work = copy.deepcopy(model)  # the forward pass below may move batch-norm statistics
    work.train(train)
    quantizers = [n for n, m in work.named_modules() if isinstance(m, (Quantizer, Estimator))]
    calls: dict[str, Call] = {}
    handles = []
    for name, module in work.named_modules():
        if _inside_quantizer(name, quantizers) or not name:
            continue

        def hook(mod, inputs, output, name=name):
            out = output[0] if isinstance(output, tuple) else output
            tensors = [t for t in inputs if isinstance(t, torch.Tensor)]
            if name not in calls:
                calls[name] = Call(
                    name,
                    mod,
                    [tuple(t.shape) for t in tensors],
                    tuple(out.shape),
                    bool(tensors and tensors[0].requires_grad),
                    train,
                )

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.set_grad_enabled(train):
            output = work(example_input)
    finally:
        for h in handles:
            h.remove()
    layers = []
    owners: dict[str, LayerCost] = {}
    for name, module in work.named_modules():
        if name not in calls:
            continue
        fn = find_rule(module)
        children = any(True for n, _ in module.named_children() if not _inside_quantizer(f"{name}.{n}", quantizers))
        if fn is None and children:
            continue  # a container: its layers are counted on their own
        cost = LayerCost(name, type(module).__name__)
        if fn is None:
            cost.counted = False
        else:
            fn(calls[name], cost)
        layers.append(cost)
        owners[name] = cost
    logits = output[0] if isinstance(output, tuple) else output
    if loss and train:
        layers.append(_loss_cost(loss, logits))
    if train and optimizer:
        clipped = {id(p) for p in binary_weights(work)} if clip_latent else set()
        binary = {id(p) for p in binary_weights(work)}
        for pname, p in work.named_parameters():
            if not p.requires_grad:
                continue
            owner = owners.get(pname.rpartition(".")[0])
            if owner is None:
                owner = LayerCost(pname.rpartition(".")[0] or pname, "parameters")
                layers.append(owner)
                owners[owner.name] = owner
            optimizer_rule(optimizer, owner, p.numel(), id(p) in clipped, id(p) in binary)
    return Profile(layers, calls, energy or EnergyTable(), train, optimizer if train else None, memory_level)


def _loss_cost(loss: str, logits: torch.Tensor) -> LayerCost:
    """Softmax cross-entropy: per logit an exponential, an add and a division, per sample a log;
    backward one subtraction per logit. Squared hinge: per logit 2 adds, a comparison and a
    square; backward 2 multiplications."""
    cost = LayerCost("loss", "loss")
    n, samples = logits.numel(), logits.numel() // logits.shape[-1]
    if loss == "cross_entropy":
        cost.add(FWD, "exp", "fp32", n + samples)
        cost.add(FWD, "add", "fp32", n)
        cost.add(FWD, "div", "fp32", n)
        cost.add(BWD_IN, "add", "fp32", n)
    elif loss == "squared_hinge":
        cost.add(FWD, "add", "fp32", 2 * n)
        cost.add(FWD, "cmp", "fp32", n)
        cost.add(FWD, "mul", "fp32", n)
        cost.add(BWD_IN, "mul", "fp32", 2 * n)
    else:
        raise ValueError(f"loss={loss!r}; use cross_entropy, squared_hinge or None")
    return cost
