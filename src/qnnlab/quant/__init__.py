"""Quantizers and gradient estimators, named by spec strings.

>>> from qnnlab import quant
>>> q = quant.get("sign@approxsign")
>>> str(q)
'sign@approxsign'
"""

from __future__ import annotations

import torch
from torch import nn

from qnnlab.quant import binary, estimators, fixed_point, floating, gradients, levels, pow2, ternary, uniform, xnor
from qnnlab.quant.base import Estimator, Quantizer, QuantMeta
from qnnlab.quant.registry import (
    ALIASES,
    ESTIMATORS,
    QUANTIZERS,
    available,
    available_estimators,
    get,
    register_estimator,
    register_quantizer,
)
from qnnlab.quant.rounding import ap2

del binary, estimators, fixed_point, floating, gradients, levels, pow2, ternary, uniform, xnor


def set_epoch(model: nn.Module, epoch: int) -> None:
    """Advance every schedule in ``model`` (slope annealing, Gumbel temperature) to ``epoch``."""
    for module in model.modules():
        if isinstance(module, Estimator):
            module.set_epoch(epoch)


def score_function_loss(model: nn.Module, loss: torch.Tensor) -> torch.Tensor:
    """The REINFORCE term to add to ``loss`` before ``backward()``; zero if no unit uses it.

    ``loss`` is per sample (shape (B,)) or a scalar; see ``estimators.ScoreFunction``.
    """
    term = loss.new_zeros(())
    for module in model.modules():
        if isinstance(module, ESTIMATORS["reinforce"]):
            term = term + module.surrogate(loss)
    return term


__all__ = [
    "ALIASES",
    "Estimator",
    "QUANTIZERS",
    "QuantMeta",
    "Quantizer",
    "ap2",
    "available",
    "available_estimators",
    "get",
    "register_estimator",
    "register_quantizer",
    "score_function_loss",
    "set_epoch",
]
