"""The two kinds of registered pieces: quantizers (forward maps) and estimators (their gradients).

A quantizer is an ``nn.Module`` so that any state it keeps (a dynamic fixed-point exponent, fitted
levels, a REINFORCE baseline) follows the model into ``state_dict`` and onto its device. Its text
form (``str(q)``) is a spec string that parses back to an equal quantizer; equality compares the
configuration, while hashing stays by identity so that modules can still sit in PyTorch's sets.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import nn

from qnnlab.quant.registry import make_estimator
from qnnlab.quant.spec import Param, Piece, bind, format_piece


@dataclasses.dataclass(frozen=True)
class QuantMeta:
    """What the profiler and exporter need to know about a quantizer, without reading its code.

    kind: ``float``, ``half``, ``binary``, ``ternary``, ``int`` (uniform grid), ``fixed`` (fixed
    point), ``pow2`` (sign and exponent), ``levels`` (a non-uniform table of values).
    bits: storage bits of one value. scaled: a real scale multiplies the integer codes (XNOR alpha).
    stochastic: the forward map draws random numbers. backward: it quantizes gradients, not values.
    grid: (lo, hi) of a uniform grid of 2^bits levels, where the values lie on one.
    output_scale: the layer multiplies its output by a factor computed from its input (XNOR's K).
    """

    kind: str
    bits: int
    signed: bool = True
    stochastic: bool = False
    scaled: bool = False
    backward: bool = False
    grid: tuple[float, float] | None = None
    output_scale: bool = False


class Configurable(nn.Module):
    """A module whose constructor arguments are declared ``Param`` s, so it has a canonical spec."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()

    def __init__(self, **values: Any) -> None:
        super().__init__()
        piece = Piece(self.name, (), tuple((k, v) for k, v in values.items()))
        self.config = bind(self.name, self.params, piece)
        for key, value in self.config.items():
            setattr(self, key, value)
        self.validate()

    def validate(self) -> None:
        """Cross-argument checks; raise ``ValueError`` naming the fix."""

    def spec(self) -> str:
        return format_piece(self.name, self.params, self.config)

    def __str__(self) -> str:
        return self.spec()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec()!r})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and str(self) == str(other)

    __hash__ = nn.Module.__hash__


class Estimator(Configurable):
    """How a quantizer's non-differentiable core ``quantizer.hard`` is differentiated.

    The default mechanism is a surrogate derivative: the forward value is ``quantizer.hard(x)``, the
    backward pass multiplies the incoming gradient by ``self.derivative(x, quantizer)``.
    Estimators for stochastic units that change the sampling itself override ``forward``.
    ``backward_ops``: the element-wise work of its backward per gradient value, for the cost rules.
    """

    backward_ops: ClassVar[dict[str, int]] = {"mul": 3, "add": 2}  # a derivative formula per element

    def forward(self, x: torch.Tensor, quantizer: Quantizer) -> torch.Tensor:
        return _SurrogateGradient.apply(
            x,
            quantizer.hard,
            lambda: self.forward_state(quantizer),
            lambda g, t, state: self.backward(g, t, quantizer, state),
        )

    def forward_state(self, quantizer: Quantizer) -> Any:
        """What backward needs from the quantizer as this forward call left it (a quantizer called
        again before backward, such as an RNN's state quantizer, may have changed since)."""
        return None

    def derivative(self, x: torch.Tensor, quantizer: Quantizer) -> torch.Tensor | None:
        """dq/dx as a tensor, a bool mask, or None for the identity."""
        raise NotImplementedError

    def backward(self, grad: torch.Tensor, x: torch.Tensor, quantizer: Quantizer, state: Any = None) -> torch.Tensor:
        """dL/dx = dL/dq * dq/dx; an estimator overrides it where a fused form is faster. ``state``
        is what ``forward_state`` returned when x went forward."""
        derivative = self.derivative(x, quantizer)
        if derivative is None:  # identity: the gradient passes unchanged
            return grad
        if derivative.dtype == torch.bool:
            return torch.where(derivative, grad, grad.new_zeros(()))
        return grad * derivative.to(grad.dtype)

    def set_epoch(self, epoch: int) -> None:
        """Schedules (slope annealing, temperature decay) follow the training epoch."""


class _SurrogateGradient(torch.autograd.Function):
    """y = core(x) in the forward pass; dL/dx = backward(dL/dy, x, state) in the backward pass, with
    ``state = capture()`` taken right after the core ran."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, core: Any, capture: Any, backward: Any) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.backward = backward
        y = core(x)
        ctx.state = capture()
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        (x,) = ctx.saved_tensors
        return ctx.backward(grad, x, ctx.state), None, None, None


class Quantizer(Configurable):
    """Forward map + estimator + metadata.

    Subclasses define ``hard(x)`` (the non-differentiable core, applied without gradient) and, when
    the map has differentiable parts around the core (DoReFa's tanh normalisation, XNOR's scale),
    ``forward`` composes them with ``self.estimator(t, self)``. ``estimators`` lists the estimator
    names that fit, the first being the default.
    """

    estimators: ClassVar[tuple[str, ...]] = ("ste",)

    def __init__(self, estimator: Estimator | str | None = None, **values: Any) -> None:
        super().__init__(**values)
        self.estimator = make_estimator(estimator or self.estimators[0])
        if self.estimator.name not in self.estimators:
            raise ValueError(
                f"estimator {self.estimator.name!r} does not fit quantizer {self.name!r}; "
                f"use one of: {', '.join(self.estimators)}"
            )

    @property
    def meta(self) -> QuantMeta:
        raise NotImplementedError

    def hard(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.estimator(x, self)

    def deterministic(self) -> Quantizer:
        """The deterministic counterpart used by the ``binary`` inference mode: the same quantizer
        with stochastic rounding off (state kept), or ``self`` when it draws nothing."""
        if not self.config.get("stochastic"):
            return self
        twin = type(self)(estimator=self.estimator.spec(), **{**self.config, "stochastic": False})
        twin.load_state_dict(self.state_dict())
        return twin

    def clip_range(self) -> tuple[float, float]:
        """The input range outside which the clipped estimator passes no gradient."""
        return (-1.0, 1.0)

    def output_scale(self, x: torch.Tensor, layer: nn.Module) -> torch.Tensor | None:
        """A factor the layer multiplies its output by (XNOR-Net's K); ``None`` for most quantizers."""
        return None

    def spec(self) -> str:
        text = super().spec()
        if self.estimator.name != self.estimators[0] or self.estimator.spec() != self.estimator.name:
            text += "@" + self.estimator.spec()
        return text
