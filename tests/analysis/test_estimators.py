"""The estimator measurement: the exact gradient is right, unbiased estimators measure unbiased."""

import pytest
import torch

from qnnlab import data
from qnnlab.analysis.estimators import Problem, measure


@pytest.fixture(scope="module")
def images():
    d = data.load("fashion-mnist-mini")
    return d.test_x[:16], d.test_y[:16]


@pytest.mark.parametrize("law", ["hard", "sigmoid"])
def test_the_exact_gradient_matches_finite_differences(images, law):
    problem = Problem(*images, hidden=4, law=law, seed=1)
    exact = problem.exact()
    step = 1e-6
    for index in [(0, 0), (2, 7), (3, 15)]:
        up, down = problem.w1.clone(), problem.w1.clone()
        up[index] += step
        down[index] -= step
        numeric = (problem.expected_loss(up) - problem.expected_loss(down)) / (2 * step)
        assert float(exact[index]) == pytest.approx(float(numeric), rel=1e-5, abs=1e-9)


def test_score_function_estimators_are_unbiased_and_straight_through_is_not(images):
    rows = {r["estimator"]: r for r in measure(*images, ("ste", "reinforce", "muprop"), samples=400, hidden=4)}
    for name in ("reinforce", "muprop"):
        assert rows[name]["relative_bias"] < 4 * rows[name]["bias_standard_error"] + 0.02, rows[name]
    assert rows["ste"]["relative_bias"] > 10 * rows["ste"]["bias_standard_error"]  # sigmoid law: dE[b]/da != 1
    assert rows["muprop"]["relative_variance"] < rows["reinforce"]["relative_variance"]  # the control variate
    assert torch.isfinite(torch.tensor([r["cosine"] for r in rows.values()])).all()


def test_bad_sizes_are_refused(images):
    with pytest.raises(ValueError, match="hidden=20 in 1..16"):
        measure(*images, hidden=20)
