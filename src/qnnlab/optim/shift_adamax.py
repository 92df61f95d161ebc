"""Shift-based AdaMax (Hubara, Courbariaux et al. 2016, arXiv 1602.02830, Algorithm 4)."""

from __future__ import annotations

from typing import Any

import torch

from qnnlab.quant.rounding import ap2, ap2_reciprocal


class ShiftAdaMax(torch.optim.Optimizer):
    """AdaMax whose multiplications by the step size and by 1/v are power-of-two shifts:

        m_t = b1 m_{t-1} + (1 - b1) g_t
        v_t = max(b2 v_{t-1}, |g_t|)
        theta_t = theta_{t-1} - AP2(lr / (1 - b1^t)) * m_t * AP2(1 / v_t)

    (The moment updates multiply by b1, b2; with b = 1 - 2^-k those are shifts and subtractions.)
    """

    def __init__(
        self, params: Any, lr: float = 2e-3, betas: tuple[float, float] = (0.9, 0.999), weight_decay: float = 0.0
    ) -> None:
        if lr <= 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"ShiftAdaMax: lr={lr} must be > 0 and betas={betas} in [0, 1)")
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad if not group["weight_decay"] else p.grad + group["weight_decay"] * p
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros(())
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_inf"] = torch.zeros_like(p)
                state["step"] += 1
                m, v = state["exp_avg"], state["exp_inf"]
                m.lerp_(g, 1 - b1)
                torch.maximum(v.mul_(b2), g.abs(), out=v)
                step_size = float(ap2(torch.tensor(group["lr"] / (1 - b1 ** float(state["step"])))))
                # a shift of m; where v = 0, m = 0 too (v bounds every past |g|), so no eps is needed
                p.sub_(m * ap2_reciprocal(v), alpha=step_size)
        return loss
