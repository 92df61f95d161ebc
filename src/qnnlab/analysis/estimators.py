"""Gradient estimators measured against the exact gradient of the expected loss.

A network small enough to enumerate: x (16 features: 28x28 images average-pooled to 4x4) ->
linear -> H stochastic binary units b in {-1, +1}^H, P(b_j = +1) = p(a_j) by the quantizer's law
-> linear -> cross-entropy. The expected loss E_b[L] = sum over all 2^H configurations of
prod_j P(b_j) L(b) is differentiable in the first layer's weights W1, so its gradient g* is exact.
Each estimator draws one b per input and returns a gradient g_i; over N draws

    relative bias      = |mean(g) - g*| / |g*|
    relative variance  = mean |g_i - mean(g)|^2 / |g*|^2
    cosine             = cos(mean(g), g*)

Estimators: those of ``qnnlab.quant`` for ``stochastic_sign`` (straight-through variants, the
Gumbel / binary-concrete relaxation, REINFORCE with a running-mean baseline), and MuProp (Gu et al.
2016, arXiv 1511.05176), the score function with a first-order Taylor control variate around the
mean-field network: g = (f(b) - f(mu) - f'(mu).(b - mu)) d log P(b) + f'(mu) . d mu, unbiased.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
import torch.nn.functional as F

from qnnlab import quant

ESTIMATORS = (
    "ste",
    "clipped",
    "hardsigmoid:slope=3.0",
    "gumbel:tau=0.5",
    "gumbel:tau=1.0",
    "gumbel:tau=2.0",
    "gumbel:tau=1.0,hard=1",
    "reinforce",
    "muprop",
)


class Problem:
    """The enumerable network and its data; ``exact()`` is the gradient of the expected loss."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, hidden: int, law: str, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        pooled = F.avg_pool2d(images.float().reshape(-1, 1, 28, 28) / 127.5 - 1, 7).reshape(len(images), -1)
        self.x, self.y, self.law = pooled.double(), labels, law
        fan_in, classes = self.x.shape[1], int(labels.max()) + 1
        self.w1 = torch.randn(hidden, fan_in, generator=generator, dtype=torch.float64) * (2 / fan_in) ** 0.5
        self.w2 = torch.randn(classes, hidden, generator=generator, dtype=torch.float64) / hidden**0.5
        self.configs = torch.tensor(list(itertools.product((-1.0, 1.0), repeat=hidden)), dtype=torch.float64)

    def quantizer(self, estimator: str) -> quant.Quantizer:
        return quant.get(f"stochastic_sign:law={self.law}@{estimator}").double()

    def prob(self, a: torch.Tensor) -> torch.Tensor:
        return self.quantizer("clipped").prob(a)

    def per_sample_loss(self, b: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(b @ self.w2.T, self.y, reduction="none")

    def expected_loss(self, w1: torch.Tensor) -> torch.Tensor:
        p = self.prob(self.x @ w1.T).unsqueeze(1)  # (B, 1, H)
        plus = (self.configs > 0).unsqueeze(0)  # (1, K, H)
        probability = torch.where(plus, p, 1 - p).prod(-1)  # (B, K)
        logits = self.configs @ self.w2.T  # (K, C)
        losses = -F.log_softmax(logits, -1)[:, self.y].T  # (B, K)
        return (probability * losses).sum(1).mean()

    def exact(self) -> torch.Tensor:
        w1 = self.w1.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(self.expected_loss(w1), w1)
        return grad

    def sample_gradient(self, q: quant.Quantizer) -> torch.Tensor:
        """One estimate: one b per input through quantizer ``q`` (and its REINFORCE term)."""
        w1 = self.w1.clone().requires_grad_(True)
        per_sample = self.per_sample_loss(q(self.x @ w1.T))
        (grad,) = torch.autograd.grad(per_sample.mean() + quant.score_function_loss(q, per_sample), w1)
        return grad

    def muprop_gradient(self) -> torch.Tensor:
        w1 = self.w1.clone().requires_grad_(True)
        p = self.prob(self.x @ w1.T).clamp(1e-6, 1 - 1e-6)
        mu = 2 * p - 1
        b = torch.where(torch.rand_like(p) < p.detach(), 1.0, -1.0).to(p.dtype)
        mean_field = mu.detach().requires_grad_(True)
        f_mu = self.per_sample_loss(mean_field)
        (slope,) = torch.autograd.grad(f_mu.sum(), mean_field)  # f'(mu) per sample, held constant
        f_b = self.per_sample_loss(b)
        advantage = f_b - f_mu.detach() - (slope * (b - mu.detach())).sum(1)
        log_p = torch.where(b > 0, p.log(), (1 - p).log()).sum(1)
        surrogate = (advantage.detach() * log_p).mean() + (slope * mu).sum(1).mean()
        (grad,) = torch.autograd.grad(surrogate, w1)
        return grad


def measure(
    images: torch.Tensor,
    labels: torch.Tensor,
    estimators: tuple[str, ...] = ESTIMATORS,
    samples: int = 2000,
    hidden: int = 10,
    law: str = "sigmoid",
    seed: int = 0,
    warmup: int = 100,
) -> list[dict[str, Any]]:
    """One row per estimator: relative bias, relative variance, cosine to the exact gradient."""
    if samples < 2 or hidden < 1 or hidden > 16:
        raise ValueError(f"samples={samples} must be >= 2 and hidden={hidden} in 1..16 (2^hidden configurations)")
    problem = Problem(images, labels, hidden, law, seed)
    exact = problem.exact().flatten()
    rows = []
    for name in estimators:
        torch.manual_seed(seed)
        if name == "muprop":
            draw = problem.muprop_gradient
        else:
            q = problem.quantizer(name).train()
            for _ in range(warmup if name.startswith("reinforce") else 0):  # let the baseline settle
                problem.sample_gradient(q)
            draw = lambda q=q: problem.sample_gradient(q)  # noqa: E731
        grads = torch.stack([draw().flatten() for _ in range(samples)])
        mean = grads.mean(0)
        norm = exact.norm()
        rows.append(
            {
                "estimator": name,
                "law": law,
                "hidden": hidden,
                "samples": samples,
                "relative_bias": float((mean - exact).norm() / norm),
                "relative_variance": float((grads - mean).pow(2).sum(1).mean() / norm**2),
                "cosine": float(F.cosine_similarity(mean, exact, dim=0)),
                "bias_standard_error": float(((grads - mean).pow(2).sum(1).mean() / samples) ** 0.5 / norm),
            }
        )
    return rows


def describe(rows: list[dict[str, Any]]) -> str:
    """A table; the bias is resolved to about its standard error sqrt(variance / samples)."""
    lines = [f"{'law':<8} {'estimator':<24} {'rel. bias':>16} {'rel. variance':>14} {'cosine':>7}"]
    for r in rows:
        bias = f"{r['relative_bias']:.3f} +- {r['bias_standard_error']:.3f}"
        lines.append(
            f"{r['law']:<8} {r['estimator']:<24} {bias:>16} {r['relative_variance']:>14.3f} {r['cosine']:>7.3f}"
        )
    return "\n".join(lines)


def summarize(rows: list[dict[str, Any]]) -> str:
    """Mean and range over networks (seeds) of each law and estimator, as a Markdown table."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["law"], row["estimator"]), []).append(row)
    lines = [
        "| law | estimator | relative bias | its standard error | relative variance | networks |",
        "|---|---|---|---|---|---|",
    ]
    for (law, name), found in groups.items():
        bias = [r["relative_bias"] for r in found]
        variance = [r["relative_variance"] for r in found]
        cosine = [r["cosine"] for r in found]
        error = sum(r["bias_standard_error"] for r in found) / len(found)
        cells = [law, name, _spread(bias), f"{error:.3f}", _spread(variance), _spread(cosine), str(len(found))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _spread(values: list[float]) -> str:
    return f"{sum(values) / len(values):.3f} ({min(values):.3f}-{max(values):.3f})"
