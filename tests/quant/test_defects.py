"""Defects found in review, each pinned by a test that failed before its fix."""

import math

import pytest
import torch

from qnnlab import quant


def test_the_clipped_estimator_masks_with_the_range_of_its_own_forward_call():
    # dynamic fixed point moves its range on every call; a quantizer called twice before backward
    # (an RNN's state quantizer) must mask the first call's gradient with the first call's range
    q = quant.get("dfxp:bits=4,rate=0.5@clipped")
    q.train()
    first = torch.tensor([0.1, 0.1, 0.1, 10.0], requires_grad=True)  # 10.0 overflows this call's range
    y = q(first)
    q(torch.tensor([50.0, 60.0, 40.0, 30.0]))  # a wide second call before backward
    y.sum().backward()
    assert first.grad.tolist() == [1.0, 1.0, 1.0, 0.0]


def test_binarization_propagates_nan_instead_of_choosing_a_sign():
    x = torch.tensor([math.nan, -2.0, -0.0, 0.0, 3.0, math.inf, -math.inf])
    for spec in ("sign", "stochastic_sign", "stochastic_sign:law=sigmoid", "xnor_act"):
        y = quant.get(spec)(x.clone())
        assert math.isnan(y[0]) and not torch.isnan(y[1:]).any(), spec
    assert math.isnan(quant.get("xnor_weight")(x.clone())[0])  # its scale mean|W| is NaN too
    assert quant.get("sign")(x)[1:].tolist() == [-1.0, 1.0, 1.0, 1.0, 1.0, -1.0]


@pytest.mark.parametrize("spec, scale", [("grad_dfxp:bits=6", 1e-3), ("grad_fixed:m=0,n=5", 0.2)])
def test_errors_in_fixed_point_lie_on_the_formats_grid(spec, scale):
    """Courbariaux et al. 2014 keep the back-propagated errors in (dynamic) fixed point too: the
    gradient passed back is the error on a grid of at most 2^6 values, a power-of-two step apart."""
    torch.manual_seed(0)
    errors = torch.randn(32, 16) * scale
    x = torch.zeros(32, 16, requires_grad=True)
    quant.get(spec)(x).backward(errors)
    passed = x.grad
    step = (passed.unique().diff()).min()
    assert len(passed.unique()) <= 64 and float(torch.log2(step)).is_integer()
    assert torch.equal(passed, (passed / step).round() * step) and (passed - errors).abs().max() <= step


def test_zipml_levels_on_gradients_are_fitted_to_them_and_unbiased():
    torch.manual_seed(0)
    errors = torch.randn(64, 32) * 1e-3
    q = quant.get("grad_zipml:levels=8")
    x = torch.zeros(64, 32, requires_grad=True)
    draws = []
    for _ in range(400):
        x.grad = None
        q(x).backward(errors)
        draws.append(x.grad.clone())
    assert all(len(d.unique()) <= 8 for d in draws[:5])
    mean = torch.stack(draws).mean(0)
    assert (mean - errors).abs().mean() < 0.05 * errors.abs().mean()  # E[q] = g
