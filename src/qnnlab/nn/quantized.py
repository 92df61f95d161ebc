"""What every quantized layer shares: the ``QuantizedModule`` protocol (its quantized parameters and
activations with their quantizers) and, for Linear and Conv, the quantized forward pass.

Optimizers, evaluation modes, cost rules and export read the protocol and each quantizer's
``QuantMeta``; none of them asks which class a layer is.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch

from qnnlab import quant
from qnnlab.quant import Quantizer

QuantSpec = "str | Quantizer | None"


class QuantizedModule:
    """The protocol of every quantized layer (Linear, Conv, DropConnect, LSTM, GRU)."""

    def weight_quantizers_by_name(self) -> dict[str, Quantizer]:
        """Each latent parameter a quantizer reads, by parameter name, with that quantizer."""
        raise NotImplementedError

    def activation_quantizers(self) -> dict[str, Quantizer]:
        """Quantizers of what flows through the layer: its input, hidden state or output gradient."""
        raise NotImplementedError

    def set_weight_quantizer(self, name: str, quantizer: Quantizer) -> None:
        """Replace the quantizer of parameter ``name`` (evaluation modes swap them for a while)."""
        raise NotImplementedError

    def quantized_weights(self) -> dict[str, torch.Tensor]:
        """Every quantized parameter by name, as the forward pass uses it."""
        return {name: q(getattr(self, name)) for name, q in self.weight_quantizers_by_name().items()}


class QuantizedLayer(QuantizedModule):
    """Mixin: weight, input and gradient quantizers, set from spec strings or objects.

    ``weight_quantizer`` maps latent float weights to the weights used in the forward pass;
    ``input_quantizer`` maps the layer input; ``grad_quantizer`` (a backward quantizer such as
    ``grad_dorefa:6``) quantizes dL/dy arriving at the layer output; ``update_input_quantizer``
    maps the input as the weight gradient sees it, dL/dW = dL/dy * Q_u(x), the forward pass
    unchanged (Lin et al. 2016's quantized back propagation: with powers of two the update's
    products are shifts).
    """

    weight_quantizer: Quantizer
    input_quantizer: Quantizer
    grad_quantizer: Quantizer
    update_input_quantizer: Quantizer

    def _set_quantizers(
        self, weight: QuantSpec, input: QuantSpec, grad: QuantSpec, update_input: QuantSpec = None
    ) -> None:
        self.weight_quantizer = make_quantizer(weight, "weight")
        self.input_quantizer = make_quantizer(input, "input")
        self.grad_quantizer = make_quantizer(grad, "grad")
        self.update_input_quantizer = make_quantizer(update_input, "update_input")

    def quantized_weight(self) -> torch.Tensor:
        """The weight as the forward pass uses it (binarized, ternarized, ...)."""
        return self.weight_quantizer(self.weight)

    def _quantized_forward(
        self, x: torch.Tensor, op: Callable[..., torch.Tensor], bias_view: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """Q_g(op(Q_i(x), Q_w(W), b)), or Q_g(K * op(Q_i(x), Q_w(W)) + b) when Q_i gives a scale K.

        ``op`` is the float layer's own function, so float quantizers reproduce it bit for bit.
        """
        scale = self.input_quantizer.output_scale(x, self)
        xq, wq = self.input_quantizer(x), self.quantized_weight()
        separate_update = self.update_input_quantizer.meta.kind != "float"
        w = wq.detach() if separate_update else wq  # then W's gradient comes from the term below only
        bias = self.bias
        if scale is None:
            y = op(xq, w, bias)
        else:
            y = op(xq, w, None) * scale
            if bias is not None:
                y = y + bias_view(bias)
        if separate_update:  # zero in value (one product twice), dL/dy * Q_u(x) as W's gradient
            xu = self.update_input_quantizer(xq.detach())
            update = op(xu, wq, None) - op(xu, wq.detach(), None)
            y = y + (update if scale is None else update * scale)
        return self.grad_quantizer(y)

    def weight_quantizers_by_name(self) -> dict[str, Quantizer]:
        return {"weight": self.weight_quantizer}

    def activation_quantizers(self) -> dict[str, Quantizer]:
        return {"input": self.input_quantizer, "grad": self.grad_quantizer, "update_input": self.update_input_quantizer}

    def set_weight_quantizer(self, name: str, quantizer: Quantizer) -> None:
        if name != "weight":
            raise KeyError(f"{type(self).__name__} quantizes only its weight, not {name!r}")
        self.weight_quantizer = quantizer

    def quant_repr(self) -> str:
        update = self.update_input_quantizer
        return f"weight={self.weight_quantizer}, input={self.input_quantizer}, grad={self.grad_quantizer}" + (
            "" if update.meta.kind == "float" else f", update_input={update}"
        )


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
