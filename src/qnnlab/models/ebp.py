"""Expectation Backpropagation for binary-weight MLPs (Soudry, Hubara, Meir 2014, NIPS;
"Mean Field Bayes Backpropagation", arXiv 1310.1867).

Every weight W_ij in {-1, +1} has a mean-field posterior with mean w_ij = tanh(h_ij); neurons are
signs, v_l = sign(W_l v_{l-1} / sqrt(K_l)), K_l the fan-in (a constant +1 input carries a binary
bias). Training is Bayesian and online, with no learning rate:

forward: by the central limit theorem each pre-activation is Gaussian, with
    mu_i = sum_j w_ij m_j / sqrt(K),  s2_i = sum_j (<W^2><v^2> - w_ij^2 m_j^2) / K
         = sum_j (q_j - w_ij^2 m_j^2) / K,
  where m_j, q_j are the mean and second moment of the layer input (pixels: x, x^2; sign
  neurons: 2 Phi(mu/s) - 1 and 1);
output: P(y | x) = prod_k Phi(y_k mu_k / s_k) for targets y in {-1, +1}^classes (one against rest);
backward: delta_L = d log P / d mu_L = y phi(mu/s) / (s Phi(y mu/s)), and through a sign layer
  delta_{l-1} = (2 phi(mu/s) / s) (W^T delta_l) / sqrt(K)  (the mean's dependence on mu);
update: h_ij += delta_i m_j / sqrt(K) = d log P / d w_ij. The log-odds of W_ij = +1 are 2 h_ij, and
  Bayes' rule moves them by log P(y | W_ij = +1) - log P(y | W_ij = -1), which to first order in
  the means is 2 d log P / d w_ij (the variances' dependence on w is neglected, as in the paper;
  the authors' code writes it as 1/2 times a Delta that carries the factor 2).

Mini-batches sum the per-sample updates. Inference follows the three modes: ``binary`` uses
sign(h) (the most probable network), ``latent`` the mean network tanh(h) through the same
probabilistic forward pass, ``ensemble:N`` N networks sampled from the posterior.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

SQRT2 = math.sqrt(2.0)


def _phi(z: torch.Tensor) -> torch.Tensor:
    return torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def _cdf(z: torch.Tensor) -> torch.Tensor:
    return 0.5 * torch.erfc(-z / SQRT2)


class EBPNetwork(nn.Module):
    """A binary-weight MLP trained by EBP; ``forward(x)`` returns output scores (the means mu_L)."""

    def __init__(self, sizes: Sequence[int], init_std: float = 0.5) -> None:
        super().__init__()
        self.sizes = list(sizes)
        self.mode = "binary"
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            self.register_buffer(f"h{i}", torch.randn(n_out, n_in + 1) * init_std)

    @property
    def log_odds(self) -> list[torch.Tensor]:
        return [getattr(self, f"h{i}") for i in range(len(self.sizes) - 1)]

    def _weights(self, sample: bool) -> list[torch.Tensor]:
        if self.mode == "latent":
            return [torch.tanh(h) for h in self.log_odds]
        if sample:  # a network drawn from the posterior: P(W = +1) = (1 + tanh h) / 2
            return [torch.where(torch.rand_like(h) < (1 + torch.tanh(h)) / 2, 1.0, -1.0) for h in self.log_odds]
        return [torch.where(h >= 0, 1.0, -1.0) for h in self.log_odds]

    @staticmethod
    def _with_bias(m: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        one = m.new_ones(m.shape[0], 1)
        return torch.cat([m, one], 1), torch.cat([q, one], 1)

    def moments(self, x: torch.Tensor, weights: list[torch.Tensor]):
        """Forward pass of means and variances; returns per layer (m_in, mu, s)."""
        m, q = x.reshape(len(x), -1), x.reshape(len(x), -1) ** 2
        trace = []
        for w in weights:
            m, q = self._with_bias(m, q)
            k = m.shape[1]
            mu = m @ w.T / math.sqrt(k)
            s2 = (q.sum(1, keepdim=True) - (m * m) @ (w * w).T) / k
            s = s2.clamp_min(1e-6).sqrt()
            trace.append((m, mu, s))
            m = 2 * _cdf(mu / s) - 1
            q = torch.ones_like(m)
        return trace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sample = self.mode.startswith("ensemble")
        return self.moments(x, self._weights(sample))[-1][1]

    @torch.no_grad()
    def ebp_step(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
        """One EBP update on a batch; returns the mean negative log-likelihood -log P(y | x) and how
        many samples the mean network classified correctly before the update."""
        means = [torch.tanh(h) for h in self.log_odds]
        trace = self.moments(x, means)
        _, mu, s = trace[-1]
        y = torch.full_like(mu, -1.0).scatter_(1, labels.unsqueeze(1), 1.0)
        mu_out = mu
        z = y * mu / s
        prob = _cdf(z).clamp_min(1e-12)
        delta = y * _phi(mu / s) / (s * prob)
        for layer in range(len(means) - 1, -1, -1):
            m_in, _, _ = trace[layer]
            k = m_in.shape[1]
            h = self.log_odds[layer]
            if layer > 0:
                _, mu_prev, s_prev = trace[layer - 1]
                back = (delta @ means[layer][:, :-1]) / math.sqrt(k)
                next_delta = 2 * _phi(mu_prev / s_prev) / s_prev * back
            h += delta.T @ m_in / math.sqrt(k)
            if layer > 0:
                delta = next_delta
        return float(-prob.log().sum(1).mean()), int((mu_out.argmax(1) == labels).sum())


def drift_from_prior(prior: EBPNetwork, posterior: EBPNetwork) -> list[dict[str, float]]:
    """How far training moved each layer's posterior from the prior it started at: the mean |h| of
    the prior, the mean |h - h_prior|, and the fraction of weights whose most probable sign flipped."""
    rows = []
    for h0, h in zip(prior.log_odds, posterior.log_odds):
        rows.append(
            {
                "prior_mean_abs_h": float(h0.abs().mean()),
                "mean_abs_shift": float((h - h0).abs().mean()),
                "signs_flipped": float(((h >= 0) != (h0 >= 0)).float().mean()),
            }
        )
    return rows
