"""Update rules: how one batch changes the model. Back-propagation with an optimizer, or Expectation
Backpropagation's Bayesian update (no gradient, no optimizer). The trainer calls ``step`` and
saves ``state_dict``; it knows neither.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from qnnlab import quant
from qnnlab.models import EBPNetwork
from qnnlab.optim import build_optimizer, build_schedule
from qnnlab.optim.rules import add_latent_rounding, quantized_weights
from qnnlab.run.config import TrainConfig


class Diverged(ArithmeticError):
    """The loss of a step is not finite; the trainer names the step and the likely causes."""

    def __init__(self, value: float) -> None:
        super().__init__(value)
        self.value = value


def build_training_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer ``config`` trains ``model`` with, latent-weight clipping and rounding included."""
    optimizer = build_optimizer(
        model,
        config.optimizer,
        config.lr,
        config.momentum,
        config.weight_decay,
        tuple(config.betas),
        config.lr_scale,
        config.clip_latent,
        config.bop_gamma,
        config.bop_threshold,
    )
    if config.latent_quantizer:
        add_latent_rounding(optimizer, [p for _, _, p, _ in quantized_weights(model)], config.latent_quantizer)
    return optimizer


class Backprop:
    """Forward, the task's per-sample loss plus the score-function term of stochastic quantizers
    (REINFORCE), backward, optional gradient-norm clipping, the optimizer step and the schedule."""

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        steps_per_epoch: int,
        wrap: Callable[[nn.Module], nn.Module] | None = None,
    ) -> None:
        self.model = model
        self.forward_model = wrap(model) if wrap else model  # e.g. DistributedDataParallel
        self.grad_clip = config.grad_clip
        self.optimizer = build_training_optimizer(model, config)
        self.schedule = build_schedule(
            self.optimizer, config.schedule, config.epochs * steps_per_epoch, steps_per_epoch, config.final_lr_fraction
        )

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def step(self, task: Any, x: torch.Tensor, y: torch.Tensor, state: Any) -> tuple[float, int, Any]:
        """One update; (mean loss, correct predictions, state carried to the next batch)."""
        per_sample, right, state = task.forward(self.forward_model, x, y, state)
        loss = per_sample.mean()
        if not torch.isfinite(loss):
            raise Diverged(float(loss.detach()))
        self.optimizer.zero_grad(set_to_none=True)
        (loss + quant.score_function_loss(self.model, per_sample)).backward()
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        self.schedule.step()
        return float(loss.detach()), right, state

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])

    def scale_lr(self, factor: float) -> None:
        """Every group's learning rate and the schedule's base times ``factor``, from this step on."""
        for group in self.optimizer.param_groups:
            group["lr"] *= factor
        self.schedule.base_lrs = [base * factor for base in self.schedule.base_lrs]


class BayesianEBP:
    """Expectation Backpropagation (Soudry et al. 2014): the posterior's log-odds move by Bayes'
    rule on each batch (``EBPNetwork.ebp_step``); there is no learning rate and no optimizer state."""

    lr = 0.0

    def __init__(self, model: EBPNetwork) -> None:
        self.model = model

    def step(self, task: Any, x: torch.Tensor, y: torch.Tensor, state: Any) -> tuple[float, int, Any]:
        nll, right = self.model.ebp_step(x, y)
        if nll != nll or nll in (float("inf"), float("-inf")):
            raise Diverged(nll)
        return nll, right, None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The posterior is the model's state; nothing else to restore."""

    def scale_lr(self, factor: float) -> None:
        raise ValueError("Expectation Backpropagation has no learning rate to change")


def update_rule_for(
    model: nn.Module, config: TrainConfig, steps_per_epoch: int, wrap: Callable[[nn.Module], nn.Module] | None = None
) -> Backprop | BayesianEBP:
    """The rule that trains ``model``: EBP's for its network, back-propagation for every other."""
    if isinstance(model, EBPNetwork):
        return BayesianEBP(model)
    return Backprop(model, config, steps_per_epoch, wrap)
