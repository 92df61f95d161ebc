"""Expectation Backpropagation: the update of the log-odds h is the first-order Bayes update."""

import math

import torch

from qnnlab.models.ebp import EBPNetwork, drift_from_prior


def _log_likelihood(x, labels, weights):
    """sum over the batch of log P(y | x) = sum_k log Phi(y_k mu_k / s_k), written independently of
    EBPNetwork, with every layer's s held constant (the approximation EBP makes)."""
    normal = torch.distributions.Normal(0.0, 1.0)
    m, q = x, x * x
    for w in weights:
        one = torch.ones(len(m), 1, dtype=m.dtype)
        m, q = torch.cat([m, one], 1), torch.cat([q, one], 1)
        k = m.shape[1]
        mu = m @ w.T / math.sqrt(k)
        s = ((q.sum(1, keepdim=True) - (m * m) @ (w * w).T) / k).clamp_min(1e-6).sqrt().detach()
        m, q = 2 * normal.cdf(mu / s) - 1, torch.ones_like(mu)
    y = torch.full_like(mu, -1.0).scatter_(1, labels.unsqueeze(1), 1.0)
    return normal.cdf(y * mu / s).log().sum()


def test_update_of_h_is_the_gradient_of_log_likelihood_in_the_weight_means():
    torch.manual_seed(0)
    net = EBPNetwork([12, 9, 7, 4]).double()
    x, labels = torch.rand(5, 12, dtype=torch.float64) * 2 - 1, torch.tensor([0, 3, 1, 2, 3])
    means = [torch.tanh(h).clone().requires_grad_() for h in net.log_odds]
    _log_likelihood(x, labels, means).backward()
    before = [h.clone() for h in net.log_odds]
    net.ebp_step(x, labels)
    for h, h0, w in zip(net.log_odds, before, means):
        torch.testing.assert_close(h - h0, w.grad)


def test_binary_mode_is_the_sign_network():
    torch.manual_seed(1)
    net = EBPNetwork([6, 5, 3])
    x = torch.rand(4, 6) * 2 - 1
    signs = [torch.where(h >= 0, 1.0, -1.0) for h in net.log_odds]
    hidden = torch.sign(torch.cat([x, torch.ones(4, 1)], 1) @ signs[0].T)
    expected = torch.cat([hidden, torch.ones(4, 1)], 1) @ signs[1].T / math.sqrt(6)
    torch.testing.assert_close(net(x), expected)


def test_drift_from_prior_counts_flipped_signs_and_shifts():
    torch.manual_seed(2)
    prior = EBPNetwork([7, 4, 3])
    posterior = EBPNetwork([7, 4, 3])
    posterior.load_state_dict(prior.state_dict())
    assert all(row["signs_flipped"] == row["mean_abs_shift"] == 0 for row in drift_from_prior(prior, posterior))
    posterior.h1[0, :2] *= -1  # two of the output layer's 3 x 5 log-odds change sign
    rows = drift_from_prior(prior, posterior)
    assert rows[0]["signs_flipped"] == 0 and math.isclose(rows[1]["signs_flipped"], 2 / 15, rel_tol=1e-6)
    assert math.isclose(rows[1]["mean_abs_shift"], float(2 * prior.h1[0, :2].abs().sum() / 15), rel_tol=1e-6)
    assert math.isclose(rows[1]["prior_mean_abs_h"], float(prior.h1.abs().mean()), rel_tol=1e-6)
