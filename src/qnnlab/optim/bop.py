"""Bop, the latent-free binary optimizer (Helwegen et al. 2019, arXiv 1906.02107)."""

from __future__ import annotations

from typing import Any

import torch


class Bop(torch.optim.Optimizer):
    """Binary weights have no latent value: they are +-1 and flip when the gradient signal is
    consistently strong. For groups with ``binary=True``:

        m_t = (1 - gamma) m_{t-1} + gamma g_t
        w <- -w  where |m_t| > tau and sign(m_t) = sign(w)

    Other groups (biases, batch norm) are updated by Adam with ``lr`` and ``betas``.
    """

    def __init__(
        self,
        params: Any,
        gamma: float = 1e-4,
        threshold: float = 1e-8,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        if not 0 < gamma <= 1 or threshold < 0:
            raise ValueError(f"Bop: gamma={gamma} must be in (0, 1] and threshold={threshold} >= 0")
        super().__init__(params, dict(gamma=gamma, threshold=threshold, lr=lr, betas=betas, eps=eps, binary=False))
        with torch.no_grad():
            for group in self.param_groups:
                if group["binary"]:
                    for p in group["params"]:
                        p.copy_(torch.where(p >= 0, 1.0, -1.0))

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if group["binary"]:
                    m = state.setdefault("momentum", torch.zeros_like(p))
                    m.lerp_(p.grad, group["gamma"])
                    flip = (m.abs() > group["threshold"]) & (torch.sign(m) == torch.sign(p))
                    p.copy_(torch.where(flip, -p, p))
                else:
                    self._adam(p, state, group)
        return loss

    @staticmethod
    def _adam(p: torch.Tensor, state: dict, group: dict) -> None:
        b1, b2 = group["betas"]
        if not state:
            state["step"] = torch.zeros(())
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        state["step"] += 1
        t = float(state["step"])
        state["exp_avg"].lerp_(p.grad, 1 - b1)
        state["exp_avg_sq"].mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
        denom = (state["exp_avg_sq"] / (1 - b2**t)).sqrt_().add_(group["eps"])
        p.addcdiv_(state["exp_avg"], denom, value=-group["lr"] / (1 - b1**t))
