"""Quantized recurrent layers: LSTM and GRU with quantized weights, inputs and hidden state.

The QNN paper (Hubara et al. 2016, arXiv 1609.07061, section 4) quantizes the weights and the
activations of recurrent language models; here each layer's input, its weight matrices and the
hidden state h_t (what the next step and the next layer read) each take a quantizer. The cell
state c_t of the LSTM stays in high precision. Parameters are named as in nn.LSTM / nn.GRU, so a
float model's state dict loads directly; with ``float`` quantizers the result equals
nn.LSTM / nn.GRU up to float rounding (the gates are evaluated in the same order).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from qnnlab.nn.quantized import QuantizedModule, QuantSpec, make_quantizer
from qnnlab.quant import Quantizer


class QuantRNNBase(nn.Module, QuantizedModule):
    gates: int

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        weight_quantizer: QuantSpec = None,
        input_quantizer: QuantSpec = None,
        state_quantizer: QuantSpec = None,
    ) -> None:
        super().__init__()
        if num_layers < 1 or input_size < 1 or hidden_size < 1:
            raise ValueError("input_size, hidden_size and num_layers must be positive")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout} must be in [0, 1)")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, dropout
        self.weight_quantizers = nn.ModuleDict()
        self.input_quantizers = nn.ModuleList()
        self.state_quantizers = nn.ModuleList()
        for layer in range(num_layers):
            width = input_size if layer == 0 else hidden_size
            for kind, cols in (("ih", width), ("hh", hidden_size)):
                name = f"weight_{kind}_l{layer}"
                self.register_parameter(name, nn.Parameter(torch.empty(self.gates * hidden_size, cols)))
                self.weight_quantizers[name] = make_quantizer(weight_quantizer, "weight")
                if bias:
                    self.register_parameter(
                        f"bias_{kind}_l{layer}", nn.Parameter(torch.empty(self.gates * hidden_size))
                    )
            self.input_quantizers.append(make_quantizer(input_quantizer, "input"))
            self.state_quantizers.append(make_quantizer(state_quantizer, "state"))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    @property
    def weight_quantizer(self):
        """The quantizer of the first weight matrix (all share one spec)."""
        return next(iter(self.weight_quantizers.values()))

    def weight_quantizers_by_name(self) -> dict[str, Quantizer]:
        return dict(self.weight_quantizers.items())

    def activation_quantizers(self) -> dict[str, Quantizer]:
        return {
            **{f"input_l{i}": q for i, q in enumerate(self.input_quantizers)},
            **{f"state_l{i}": q for i, q in enumerate(self.state_quantizers)},
        }

    def set_weight_quantizer(self, name: str, quantizer: Quantizer) -> None:
        if name not in self.weight_quantizers:
            raise KeyError(f"{type(self).__name__} has no quantized parameter {name!r}")
        self.weight_quantizers[name] = quantizer

    def forward(self, x: torch.Tensor, hx=None):
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(
                f"{type(self).__name__} expects input of shape (T, B, {self.input_size}) "
                f"(or (B, T, {self.input_size}) with batch_first), got {tuple(x.shape)}"
            )
        if self.batch_first:
            x = x.transpose(0, 1)
        state = self._initial_state(x, hx)
        weights = self.quantized_weights()
        finals = []
        for layer in range(self.num_layers):
            if layer > 0 and self.dropout and self.training:
                x = F.dropout(x, self.dropout)
            xq = self.input_quantizers[layer](x)
            bias_ih = getattr(self, f"bias_ih_l{layer}") if self.bias else None
            bias_hh = getattr(self, f"bias_hh_l{layer}") if self.bias else None
            projected = F.linear(xq, weights[f"weight_ih_l{layer}"], bias_ih)
            w_hh = weights[f"weight_hh_l{layer}"]
            layer_state = tuple(s[layer] for s in state)
            outputs = []
            for t in range(x.shape[0]):
                layer_state = self._step(projected[t], layer_state, w_hh, bias_hh, self.state_quantizers[layer])
                outputs.append(layer_state[0])
            x = torch.stack(outputs)
            finals.append(layer_state)
        out = x.transpose(0, 1) if self.batch_first else x
        final = tuple(torch.stack(parts) for parts in zip(*finals))
        return out, self._pack_state(final)

    def _initial_state(self, x: torch.Tensor, hx):
        raise NotImplementedError

    def _pack_state(self, final):
        raise NotImplementedError

    def _step(self, gates_x, state, w_hh, bias_hh, state_quantizer):
        raise NotImplementedError

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
            f"weight={self.weight_quantizer}, input={self.input_quantizers[0]}, state={self.state_quantizers[0]}"
        )


class QuantLSTM(QuantRNNBase):
    """LSTM (gate order i, f, g, o as nn.LSTM) with quantized W, input and hidden state h_t.

    c_t = s(f) c_{t-1} + s(i) tanh(g), h_t = Q_h(s(o) tanh(c_t)).
    """

    gates = 4

    def _initial_state(self, x, hx):
        if hx is None:
            zeros = x.new_zeros(self.num_layers, x.shape[1], self.hidden_size)
            return zeros, zeros
        return hx

    def _pack_state(self, final):
        return final[0], final[1]

    def _step(self, gates_x, state, w_hh, bias_hh, state_quantizer):
        h, c = state
        i, f, g, o = (gates_x + F.linear(h, w_hh, bias_hh)).chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = state_quantizer(torch.sigmoid(o) * torch.tanh(c))
        return h, c


class QuantGRU(QuantRNNBase):
    """GRU (gate order r, z, n as nn.GRU) with quantized W, input and hidden state h_t.

    n = tanh(x_n + r * (W_hn h + b_hn)), h_t = Q_h((1 - z) n + z h_{t-1}).
    """

    gates = 3

    def _initial_state(self, x, hx):
        if hx is None:
            hx = x.new_zeros(self.num_layers, x.shape[1], self.hidden_size)
        return (hx,)

    def _pack_state(self, final):
        return final[0]

    def _step(self, gates_x, state, w_hh, bias_hh, state_quantizer):
        (h,) = state
        x_r, x_z, x_n = gates_x.chunk(3, dim=-1)
        h_r, h_z, h_n = F.linear(h, w_hh, bias_hh).chunk(3, dim=-1)
        r = torch.sigmoid(x_r + h_r)
        z = torch.sigmoid(x_z + h_z)
        n = torch.tanh(x_n + r * h_n)
        return (state_quantizer((1 - z) * n + z * h),)
