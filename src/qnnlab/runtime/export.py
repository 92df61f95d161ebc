"""Export a trained binary model to the packed format: a flat list of ops plus packed tensors.

Supported: sequential MLPs of binary layers as the ``bnn`` / ``bnn-shift`` recipes build them:
Flatten, QuantLinear with sign weights (the first with real, 8-bit or sign inputs, the others
with sign inputs), BatchNorm1d or ShiftBatchNorm1d (eval statistics), Identity. Anything else is
refused by name.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from qnnlab import kernels
from qnnlab.nn import QuantLinear, ShiftBatchNorm1d
from qnnlab.quant.rounding import ap2


class ExportError(ValueError):
    """The model holds a layer or quantizer the packed runtime does not support."""


def batchnorm_affine(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) with bn(y) = y * scale + shift in eval mode, in float64."""
    mean, var = bn.running_mean.double(), bn.running_var.double()
    gamma = bn.weight.detach().double() if bn.affine else torch.ones_like(mean)
    beta = bn.bias.detach().double() if bn.affine else torch.zeros_like(mean)
    if isinstance(bn, ShiftBatchNorm1d):
        scale = (ap2(gamma.float()) * ap2(torch.rsqrt(bn.running_var + bn.eps))).double()
    else:
        scale = gamma / torch.sqrt(var + bn.eps)
    return scale, beta - mean * scale


def _is_sign(q: Any) -> bool:
    return q.meta.kind == "binary" and not q.meta.scaled and q.name in ("sign", "stochastic_sign")


def export_model(model: nn.Module) -> tuple[list[dict[str, Any]], dict[str, torch.Tensor]]:
    """(ops, tensors) for the runtime; raises ExportError naming what is not supported."""
    if not isinstance(model, nn.Sequential):
        raise ExportError(f"export supports nn.Sequential MLPs; got {type(model).__name__}")
    model = model.eval()
    ops: list[dict[str, Any]] = []
    tensors: dict[str, torch.Tensor] = {}
    layers = [(name, m) for name, m in model.named_children() if not isinstance(m, (nn.Identity, nn.Dropout))]
    first_linear = True
    for index, (name, m) in enumerate(layers):
        if isinstance(m, nn.Flatten):
            ops.append({"op": "flatten"})
        elif isinstance(m, QuantLinear):
            if not _is_sign(m.weight_quantizer):
                raise ExportError(f"layer {name}: weights {m.weight_quantizer} are not plain sign weights")
            k = m.in_features
            w = kernels.pack(m.weight.detach())
            tensors[f"{name}.weight"] = w
            op: dict[str, Any] = {"op": "binary_linear", "weight": f"{name}.weight", "k": k, "layer": name}
            if m.bias is not None:
                tensors[f"{name}.bias"] = m.bias.detach().float().clone()
                op["bias"] = f"{name}.bias"
            if first_linear and not _is_sign(m.input_quantizer):
                if m.input_quantizer.meta.kind != "float" and str(m.input_quantizer) != "uniform:lo=-1.0":
                    raise ExportError(f"layer {name}: first-layer input quantizer {m.input_quantizer} is not supported")
                op["op"] = "real_linear"
                tensors[f"{name}.weight_sum"] = torch.where(m.weight.detach() >= 0, 1.0, -1.0).sum(1).double()
                op["weight_sum"] = f"{name}.weight_sum"
            elif not _is_sign(m.input_quantizer):
                raise ExportError(f"layer {name}: input quantizer {m.input_quantizer} is not sign")
            ops.append(op)
            first_linear = False
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            scale, shift = batchnorm_affine(m)
            following = layers[index + 1][1] if index + 1 < len(layers) else None
            if isinstance(following, QuantLinear) and _is_sign(following.input_quantizer):
                # sign(y * scale + shift) >= 0  <=>  y >= -shift/scale (scale > 0), y <= -shift/scale (< 0)
                safe = torch.where(scale == 0, torch.ones_like(scale), scale)
                tensors[f"{name}.threshold"] = -shift / safe
                tensors[f"{name}.positive"] = scale > 0
                tensors[f"{name}.constant"] = torch.where(scale == 0, torch.where(shift >= 0, 1.0, 0.0), -1.0).double()
                ops.append({"op": "threshold", "threshold": f"{name}.threshold", "positive": f"{name}.positive",
                            "constant": f"{name}.constant", "layer": name})
            elif following is None:
                tensors[f"{name}.scale"], tensors[f"{name}.shift"] = scale.float(), shift.float()
                ops.append({"op": "affine", "scale": f"{name}.scale", "shift": f"{name}.shift", "layer": name})
            else:
                raise ExportError(f"layer {name}: batch norm must feed a sign-input layer or end the model")
        else:
            raise ExportError(f"layer {name} ({type(m).__name__}) is not supported by the packed runtime; "
                              f"it runs Flatten, binary QuantLinear and BatchNorm1d chains (bnn recipes)")
    if not ops or ops[-1]["op"] not in ("affine", "binary_linear", "real_linear"):
        raise ExportError("the model must end with a linear layer or an output batch norm")
    return ops, tensors
