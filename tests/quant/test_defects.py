"""Defects found in review, each pinned by a test that failed before its fix."""

import math

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
