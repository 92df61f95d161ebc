"""What every quantized layer shares: its quantizers and the quantized view of its weights."""

from __future__ import annotations

import copy
from typing import Callable

import torch

from qnnlab import quant
from qnnlab.quant import Quantizer

QuantSpec = "str | Quantizer | None"


class QuantizedLayer:
    """Mixin: weight, input and gradient quantizers, set from spec strings or objects.

    ``weight_quantizer`` maps latent float weights to the weights used in the forward pass;
    ``input_quantizer`` maps the layer input; ``grad_quantizer`` (a backward quantizer such as
    ``grad_dorefa:6``) quantizes dL/dy arriving at the layer output.
    """

    weight_quantizer: Quantizer
    input_quantizer: Quantizer
    grad_quantizer: Quantizer

    def _set_quantizers(self, weight: QuantSpec, input: QuantSpec, grad: QuantSpec) -> None:
        self.weight_quantizer = make_quantizer(weight, "weight")
        self.input_quantizer = make_quantizer(input, "input")
        self.grad_quantizer = make_quantizer(grad, "grad")

    def quantized_weight(self) -> torch.Tensor:
        """The weight as the forward pass uses it (binarized, ternarized, ...)."""
        return self.weight_quantizer(self.weight)  # type: ignore[attr-defined]

    def _quantized_forward(self, x: torch.Tensor, op: Callable[..., torch.Tensor], bias_view: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Q_g(op(Q_i(x), Q_w(W), b)), or Q_g(K * op(Q_i(x), Q_w(W)) + b) when Q_i gives a scale K.

        ``op`` is the float layer's own function, so float quantizers reproduce it bit for bit.
        """
        scale = self.input_quantizer.output_scale(x, self)  # type: ignore[arg-type]
        xq, wq = self.input_quantizer(x), self.quantized_weight()
        bias = self.bias  # type: ignore[attr-defined]
        if scale is None:
            y = op(xq, wq, bias)
        else:
            y = op(xq, wq, None) * scale
            if bias is not None:
                y = y + bias_view(bias)
        return self.grad_quantizer(y)

    def quantized_weights(self) -> dict[str, torch.Tensor]:
        """Every quantized parameter by name, as the forward pass uses it."""
        return {"weight": self.quantized_weight()}

    def quant_repr(self) -> str:
        return f"weight={self.weight_quantizer}, input={self.input_quantizer}, grad={self.grad_quantizer}"


def make_quantizer(spec: QuantSpec, role: str) -> Quantizer:
    """A fresh quantizer for one role (weight, input, state: forward maps; grad: a backward one).

    A quantizer object passed in is copied, so stateful quantizers never share state between
    tensors.
    """
    q = copy.deepcopy(spec) if isinstance(spec, Quantizer) else quant.get(spec)
    if role == "grad":
        if not q.meta.backward and q.meta.kind != "float":
            backward = ", ".join(n for n in quant.available() if n.startswith("grad_"))
            raise ValueError(f"grad_quantizer {q} is a forward quantizer; use a backward one: {backward}")
    elif q.meta.backward:
        raise ValueError(f"{q} quantizes gradients; pass it as grad_quantizer, not {role}_quantizer")
    return q


