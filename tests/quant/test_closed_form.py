"""Forward values and backward gradients against hand-computed closed forms."""

import math

import pytest
import torch

from qnnlab import quant

X = [-2.0, -1.0, -0.6, -0.25, 0.0, 0.3, 0.75, 1.0, 1.5]
INSIDE = [0, 1, 1, 1, 1, 1, 1, 1, 0]  # 1{|x| <= 1}


def run(spec, values=X, weights=None):
    """Forward q(x) and the gradient of sum(weights * q(x)) with respect to x."""
    x = torch.tensor(values, requires_grad=True)
    q = quant.get(spec)
    y = q(x)
    (y * (torch.ones_like(y) if weights is None else torch.tensor(weights))).sum().backward()
    return y.detach(), x.grad


def close(a, b, tol=1e-6):
    return torch.allclose(
        torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32), atol=tol, rtol=0
    )


SIGN = [-1, -1, -1, -1, 1, 1, 1, 1, 1]


@pytest.mark.parametrize(
    "estimator, grad",
    [
        ("ste", [1] * 9),
        ("clipped", INSIDE),
        ("hardsigmoid", INSIDE),  # slope 1
        ("approxsign", [0, 0, 0.8, 1.5, 2, 1.4, 0.5, 0, 0]),
    ],
)
def test_sign_with_each_estimator(estimator, grad):
    y, g = run(f"sign@{estimator}")
    assert close(y, SIGN)  # sign(0) = +1
    assert close(g, grad)


def test_swishsign_gradient_is_derivative_of_swishsign():
    beta = 3.0
    y, g = run(f"sign@swishsign:beta={beta}")
    x = torch.tensor(X, requires_grad=True)
    s = torch.sigmoid(beta * x)
    (2 * s * (1 + beta * x * (1 - s)) - 1).sum().backward()
    assert close(y, SIGN) and close(g, x.grad, 1e-5)


def test_hardsigmoid_slope_anneals_with_epoch():
    q = quant.get("sign@hardsigmoid:slope=1.0,rate=1.0,max=3.0")
    x = torch.tensor(X, requires_grad=True)
    quant.set_epoch(q, 1)  # slope 2: gradient 2 where |x| <= 1/2
    q(x).sum().backward()
    assert close(x.grad, [0, 0, 0, 2, 2, 2, 0, 0, 0])
    quant.set_epoch(q, 10)  # capped at 3
    assert float(q.estimator.current_slope) == 3.0


def test_dorefa_activation():
    y, g = run("dorefa:2")
    assert close(y, [0, 0, 0, 0, 0, 1 / 3, 2 / 3, 1, 1])
    assert close(g, [0, 0, 0, 0, 1, 1, 1, 1, 0])  # STE inside [0, 1], clip outside


def test_dorefa_weight_k_bits():
    y, g = run("dorefa_w:2", [-2.0, 0.0, 0.5])
    t = [math.tanh(v) for v in (-2.0, 0.0, 0.5)]
    m = max(abs(v) for v in t)
    expected = [2 * round(3 * (v / (2 * m) + 0.5)) / 3 - 1 for v in t]
    assert close(y, expected)
    # gradient: STE through the rounding, the tanh normalisation differentiated
    x = torch.tensor([-2.0, 0.0, 0.5], requires_grad=True)
    tt = torch.tanh(x)
    (2 * (tt / (2 * tt.abs().max()) + 0.5) - 1).sum().backward()
    assert close(g, x.grad)


def test_dorefa_weight_one_bit():
    y, g = run("dorefa_w:1", [-2.0, 0.0, 0.5])
    assert close(y, [-2.5 / 3, 2.5 / 3, 2.5 / 3])
    assert close(g, [1, 1, 1])


def test_symmetric_int():
    y, g = run("int:bits=3")
    assert close(y, [v / 3 for v in (-3, -3, -2, -1, 0, 1, 2, 3, 3)])
    assert close(g, INSIDE)
    y, g = run("int:bits=3,range=2.0")  # 3 x / 2 = -3, -1.5, -0.9, -0.375, 0, 0.45, 1.125, 1.5, 2.25
    assert close(y, [2 * v / 3 for v in (-3, -2, -1, 0, 0, 0, 1, 2, 2)])  # ties round to even
    assert close(g, [1] * 9)


def test_unsigned_uniform_for_input_data():
    y, g = run("uniform:bits=2,lo=-1,hi=1")
    assert close(y, [-1, -1, -1 / 3, -1 / 3, 1 / 3, 1 / 3, 1, 1, 1])
    assert close(g, INSIDE)
    pixels = torch.arange(256) / 255.0
    assert torch.equal(quant.get("uniform:bits=8")(pixels), pixels)  # 8-bit pixels are exact


def test_fixed_point_saturates():
    y, g = run("fixed:m=1,n=2", X + [2.5, -3.0])
    assert close(y, [-2, -1, -0.5, -0.25, 0, 0.25, 0.75, 1, 1.5, 1.75, -2])
    assert close(g, [1] * 11)
    _, g = run("fixed:m=1,n=2@clipped", X + [2.5, -3.0])
    assert close(g, [1] * 9 + [0, 0])


def test_dynamic_fixed_point_picks_exponent_from_data():
    q = quant.get("dfxp:bits=4,rate=0.0")
    y = q(torch.tensor([0.3, -0.6, 1.5, 0.1]))
    assert int(q.exponent) == 1  # 2^1 (1 - 2^-3) = 1.75 >= 1.5 > 0.875
    assert close(y, [0.25, -0.5, 1.5, 0.0])
    q(torch.tensor([0.3, -0.6, 0.2, 0.1]))  # range shrinks one step per call
    assert int(q.exponent) == 0
    q(torch.tensor([0.3, -0.6, 0.2, 0.1]))
    assert int(q.exponent) == 0  # 2^-1 (1 - 2^-3) < 0.6, so it stays
    q.eval()
    assert close(q(torch.tensor([5.0])), [0.875])  # frozen in eval: saturates


def test_dynamic_fixed_point_per_channel():
    q = quant.get("dfxp:bits=4,rate=0.0,group=channel")
    q(torch.tensor([[0.5, 0.25], [4.0, -3.0]]))
    assert q.exponent.tolist() == [0, 3]


def test_power_of_two():
    y, g = run("pow2:min_exp=-2,max_exp=0")
    assert close(y, [-1, -1, -0.5, -0.25, 0, 0.25, 1, 1, 1])
    assert close(g, [1] * 9)
    y, _ = run("pow2:min_exp=-2,max_exp=0", [0.1, 0.13, -0.0625])
    assert close(y, [0, 0.125 * 2, 0])  # below 2^-3 -> 0; 0.13 rounds to the smallest level 2^-2


def test_ternary_threshold_with_scale():
    y, g = run("ternary")
    delta = 0.7 * sum(abs(v) for v in X) / len(X)
    kept = [abs(v) for v in X if abs(v) > delta]
    alpha = sum(kept) / len(kept)
    assert close(y, [alpha * (math.copysign(1, v) if abs(v) > delta else 0) for v in X], 1e-5)
    assert close(g, [alpha] * 9, 1e-5)  # sum of codes is 0, so only the STE part remains
    y, _ = run("ternary:scaled=0")
    assert set(y.tolist()) <= {-1.0, 0.0, 1.0}


def test_stochastic_ternary_extremes_are_deterministic():
    for _ in range(20):
        y, g = run("ternary_stochastic", [-2.0, -1.0, 0.0, 1.0, 3.0])
        assert close(y, [-1, -1, 0, 1, 1])
        assert close(g, [0, 1, 1, 1, 0])


def test_xnor_weight_scale_and_gradient():
    w = torch.tensor([[1.0, -2.0], [0.5, 0.5]], requires_grad=True)
    q = quant.get("xnor_weight")
    y = q(w)
    assert close(y, [[1.5, -1.5], [0.5, 0.5]])
    y.sum().backward()
    # row 0: codes sum to 0 -> alpha * 1{|w| <= 1}; row 1: alpha + (sum of codes) * sign(w) / n
    assert close(w.grad, [[1.5, 0.0], [1.5, 1.5]])


def test_half_saturates_instead_of_overflowing():
    y, g = run("half", [1 / 3, 70000.0, -1e6])
    assert close(y, [float(torch.tensor(1 / 3).half()), 65504, -65504])
    assert close(g, [1, 1, 1])


def test_float_is_identity():
    y, g = run("float")
    assert close(y, X) and close(g, [1] * 9)


def test_fitted_levels_use_the_distinct_values_of_small_data():
    for name in ("lloydmax", "zipml"):
        q = quant.get(f"{name}:levels=4").fit(torch.tensor([0.0, 0.0, 1.0, 1.0, 3.0]))
        assert q.values.tolist() == [0.0, 1.0, 3.0, 3.0]
    lm = quant.get("lloydmax:levels=4").fit(torch.tensor([0.0, 1.0, 3.0]))
    assert close(lm(torch.tensor([2.2, 1.9, -5.0, 9.0])), [3.0, 1.0, 0.0, 3.0])


def test_lloyd_max_levels_for_uniform_data_are_cell_midpoints():
    data = torch.linspace(0, 1, 4001)
    q = quant.get("lloydmax:levels=4").fit(data)
    assert close(q.values, [0.125, 0.375, 0.625, 0.875], 2e-3)


def test_zipml_levels_for_uniform_data_are_evenly_spread():
    data = torch.linspace(0, 1, 4001)
    q = quant.get("zipml:levels=4").fit(data)
    assert close(q.values, [0, 1 / 3, 2 / 3, 1], 0.01)


def test_zipml_rounds_stochastically_between_neighbours():
    q = quant.get("zipml:levels=3").fit(torch.tensor([0.0, 1.0, 3.0]))
    y = q(torch.full((4000,), 2.5))
    assert set(y.tolist()) == {1.0, 3.0}
    assert abs(float(y.mean()) - 2.5) < 0.06


def test_stochastic_sign_probability_laws():
    q = quant.get("stochastic_sign")
    assert close(q.prob(torch.tensor([-2.0, 0.0, 0.5])), [0, 0.5, 0.75])
    q = quant.get("stochastic_sign:law=sigmoid")
    assert close(q.prob(torch.tensor([0.0])), [0.5])
    y, g = run("stochastic_sign", [-2.0, 0.3, 5.0])
    assert close(y[[0, 2]], [-1, 1]) and abs(float(y[1])) == 1
    assert close(g, [0, 1, 0])


def test_reinforce_gradient_is_advantage_times_score():
    torch.manual_seed(0)
    layer = quant.get("stochastic_sign:law=sigmoid@reinforce:momentum=0.5")
    x = torch.tensor([[0.5, -1.0], [2.0, 0.0]], requires_grad=True)
    b = layer(x)
    assert not b.requires_grad  # no pathwise gradient
    loss = torch.tensor([3.0, 1.0])  # per sample
    quant.score_function_loss(layer, loss).backward()
    p = torch.sigmoid(x.detach())
    bits = (b + 1) / 2
    expected = loss[:, None] * (bits - p) / 2  # baseline 0; (1/B) per sample
    assert close(x.grad, expected)
    assert float(layer.estimator.baseline) == pytest.approx(1.0)  # 0.5 * 0 + 0.5 * mean(loss)
    assert layer.estimator.log_probs == []


def test_gumbel_soft_and_hard_samples():
    torch.manual_seed(0)
    x = torch.zeros(1000, requires_grad=True)
    soft = quant.get("stochastic_sign@gumbel:tau=1.0")(x)
    assert ((soft > -1) & (soft < 1)).all()
    hard = quant.get("stochastic_sign@gumbel:tau=1.0,hard=1")(x)
    assert set(hard.tolist()) == {-1.0, 1.0}
    hard.sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad > 0).all()


def test_gumbel_temperature_decays():
    q = quant.get("stochastic_sign@gumbel:tau=2.0,decay=0.5,min=0.5")
    quant.set_epoch(q, 2)
    assert float(q.estimator.current_tau) == pytest.approx(2 * math.exp(-1))
    quant.set_epoch(q, 100)
    assert float(q.estimator.current_tau) == pytest.approx(0.5)


def test_gradient_quantizers_keep_forward_and_change_backward():
    x = torch.tensor([[0.3, -0.7, 0.05]], requires_grad=True)
    y = quant.get("grad_pow2:exponents=3")(x)
    assert torch.equal(y, x)
    y.backward(torch.tensor([[0.3, -0.7, 0.05]]))
    # max 0.7 -> top exponent round(log2 0.7) = -1; kept exponents -1, -2, -3; 0.05 < 2^-4 -> 0
    assert close(x.grad, [[0.25, -0.5, 0.0]])
    x.grad = None
    y = quant.get("grad_dorefa:bits=2")(x)
    y.backward(torch.tensor([[0.3, -0.7, 0.05]]))
    m, n = 0.7, 3
    grid = {round(2 * m * (k / n - 0.5), 5) for k in range(n + 1)}
    assert {round(v, 5) for v in x.grad.flatten().tolist()} <= grid


@pytest.mark.parametrize("bits", [2, 3, 8])
def test_fused_dorefa_weights_equal_the_composed_formula(bits):
    torch.manual_seed(bits)
    x = torch.randn(40, 17, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    upstream = torch.randn(40, 17)
    (quant.get(f"dorefa_w:{bits}")(x) * upstream).sum().backward()
    t = torch.tanh(x2)
    u = t / (2 * t.abs().max()) + 0.5
    n = 2**bits - 1
    composed = 2 * (u + (torch.round(u * n) / n - u).detach()) - 1  # rounding passed straight through
    (composed * upstream).sum().backward()
    assert torch.allclose(quant.get(f"dorefa_w:{bits}")(x.detach()), composed.detach(), atol=1e-6)
    assert torch.allclose(x.grad, x2.grad, atol=1e-5)
