"""Property tests: unbiased stochastic quantizers, outputs on their grids, bounded overflow, no NaN."""

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from qnnlab import quant

SAMPLES = 20_000
# 5 standard errors of a mean of SAMPLES draws whose values span at most 2: 5 * 1 / sqrt(SAMPLES)
TOLERANCE = 5 / SAMPLES**0.5

values = st.floats(-3.0, 3.0, allow_nan=False, width=32)


def sample_mean(spec, x):
    q = quant.get(spec)
    return q(torch.full((SAMPLES,), x)).mean().item()


@settings(max_examples=40, deadline=None)
@given(x=values)
def test_stochastic_binarization_is_unbiased(x):
    assert abs(sample_mean("stochastic_sign", x) - max(-1.0, min(1.0, x))) < TOLERANCE


@settings(max_examples=40, deadline=None)
@given(x=values)
def test_stochastic_ternary_is_unbiased(x):
    assert abs(sample_mean("ternary_stochastic", x) - max(-1.0, min(1.0, x))) < TOLERANCE


@settings(max_examples=40, deadline=None)
@given(x=st.floats(0.0, 1.0, width=32), bits=st.integers(1, 6))
def test_stochastic_rounding_is_unbiased(x, bits):
    assert abs(sample_mean(f"dorefa:bits={bits},stochastic=1", x) - x) < TOLERANCE / 2
    y = 2 * x - 1
    assert abs(sample_mean(f"int:bits={bits + 1},stochastic=1", y) - y) < TOLERANCE
    assert abs(sample_mean("fixed:m=1,n=2,stochastic=1", 1.5 * y) - 1.5 * y) < 2 * TOLERANCE  # inside the range


@settings(max_examples=30, deadline=None)
@given(x=st.floats(-0.75, 0.75, width=32))
def test_gumbel_hard_samples_have_the_unit_probability(x):
    # binary concrete: P(sigmoid((logit p + L)/tau) > 1/2) = p for every tau
    q = quant.get("stochastic_sign@gumbel:tau=0.3,hard=1")
    assert abs(q(torch.full((SAMPLES,), x)).mean().item() - x) < TOLERANCE


@settings(max_examples=25, deadline=None)
@given(g=st.floats(-1.0, 1.0, width=32), bits=st.integers(1, 6))
def test_dorefa_gradient_quantization_is_unbiased(g, bits):
    x = torch.zeros(SAMPLES, 2, requires_grad=True)
    grad = torch.tensor([[g, 1.0]]).expand(SAMPLES, 2)  # per-sample max is 1
    quant.get(f"grad_dorefa:bits={bits}")(x).backward(grad)
    assert abs(x.grad[:, 0].mean().item() - g) < TOLERANCE


@settings(max_examples=50, deadline=None)
@given(data=st.lists(st.floats(-100, 100, allow_nan=False, width=32), min_size=1, max_size=64), bits=st.integers(1, 8))
def test_k_bit_outputs_lie_on_their_grid(data, bits):
    x = torch.tensor(data)
    n = 2**bits - 1
    on_grid = lambda v, scale: torch.allclose(v * scale, torch.round(v * scale), atol=1e-3)  # noqa: E731
    a = quant.get(f"dorefa:{bits}")(x)
    assert on_grid(a, n) and a.min() >= 0 and a.max() <= 1
    assert len(torch.unique(quant.get(f"dorefa:{bits}")(torch.linspace(-1, 2, 1000)))) == n + 1
    w = quant.get(f"dorefa_w:{bits}")(x)
    if bits > 1:
        assert on_grid((w + 1) / 2, n) and w.abs().max() <= 1
    u = quant.get(f"uniform:bits={bits},lo=-2,hi=2")(x)
    assert on_grid((u + 2) / 4, n)
    if bits > 1:
        s = quant.get(f"int:bits={bits}")(x)
        half = 2 ** (bits - 1) - 1
        assert on_grid(s, half) and s.abs().max() <= 1


@settings(max_examples=40, deadline=None)
@given(
    scale=st.floats(1e-6, 1e6),
    rate=st.sampled_from([0.0, 1e-3, 1e-2, 0.05]),
    bits=st.integers(2, 16),
    seed=st.integers(0, 2**16),
)
def test_dynamic_fixed_point_never_overflows_more_than_its_rate(scale, rate, bits, seed):
    torch.manual_seed(seed)
    q = quant.get(f"dfxp:bits={bits},rate={rate}")
    for step in range(4):  # the range tracks data whose scale moves between calls
        x = torch.randn(2000) * scale * (10.0 if step % 2 else 0.1)
        e = float(q.needed_exponent(x))
        y = q(x)
        top = 2.0 ** int(q.exponent) * (1 - 2.0 ** (1 - bits))
        overflows = int(((x > top) | (x < -(2.0 ** int(q.exponent)))).sum())
        assert overflows <= int(rate * x.numel())
        assert int(q.exponent) >= e
        assert torch.isfinite(y).all()


EXTREME = [0.0, -0.0, 1e-45, -1e-45, 1e-20, 1.0, -1.0, 3e38, -3e38, 1e30, -1e30, 65504.0, 70000.0, 0.5]


def all_pairs():
    for name, cls in sorted(quant.QUANTIZERS.items()):
        for estimator in cls.estimators:
            yield f"{name}@{estimator}"


@pytest.mark.parametrize("spec", list(all_pairs()))
def test_no_nan_or_inf_for_finite_input(spec):
    torch.manual_seed(0)
    q = quant.get(spec)
    for values in (EXTREME, [0.0] * 8):
        for shape in ((len(values),), (2, len(values) // 2)):
            x = torch.tensor(values).reshape(shape).requires_grad_(True)
            y = q(x)
            assert torch.isfinite(y).all(), (spec, values, y)
            if y.requires_grad:
                y.sum().backward()
                assert torch.isfinite(x.grad).all(), (spec, x.grad)
            loss = torch.ones(shape[0]) if len(shape) == 2 else torch.tensor(1.0)
            assert torch.isfinite(quant.score_function_loss(q, loss))


@settings(max_examples=60, deadline=None)
@given(
    scale=st.floats(1e-20, 1e20),
    rate=st.sampled_from([0.0, 1e-3, 0.02, 0.3]),
    bits=st.integers(2, 16),
    n=st.integers(1, 300),
    seed=st.integers(0, 2**16),
)
def test_needed_exponent_is_the_smallest_that_keeps_the_rate(scale, rate, bits, n, seed):
    torch.manual_seed(seed)
    x = torch.randn(n) * scale
    q = quant.get(f"dfxp:bits={bits},rate={rate}")
    e = int(q.needed_exponent(x))
    allowed = int(rate * n)

    def overflows(exponent):
        return int((x.abs() > 2.0**exponent * (1 - 2.0 ** (1 - bits))).sum())

    assert overflows(e) <= allowed
    assert e == bits - 126 or overflows(e - 1) > allowed


def test_needed_exponent_histogram_fallback_agrees():
    torch.manual_seed(0)
    x = torch.cat([torch.randn(5000) * 1e-3, torch.tensor([1e6, -3e5])])  # two outliers far above the rest
    q = quant.get("dfxp:bits=8,rate=0.01")
    e = int(q.needed_exponent(x))  # needs more steps down than STEPS_DOWN: the histogram decides
    usable = 1 - 2.0**-7
    assert int((x.abs() > 2.0**e * usable).sum()) <= 50 < int((x.abs() > 2.0 ** (e - 1) * usable).sum())


@settings(max_examples=80, deadline=None)
@given(
    scale=st.floats(1e-30, 1e30),
    rate=st.sampled_from([0.0, 1e-4, 1e-2, 0.3]),
    bits=st.integers(2, 32),
    shape=st.sampled_from([(0,), (1,), (7,), (300,), (3, 50), (4, 0)]),
    group=st.sampled_from(["tensor", "channel"]),
    specials=st.lists(st.sampled_from(EXTREME + [float("inf"), float("-inf"), float("nan"), 1e-40]), max_size=6),
    seed=st.integers(0, 2**16),
)
@example(scale=1.0, rate=0.3, bits=2, shape=(7,), group="tensor", specials=[0.0] * 5, seed=0)  # zeros, histogram
@example(scale=1.0, rate=0.0, bits=26, shape=(1,), group="tensor", specials=[1.0], seed=0)  # top code rounds to 2^e
@example(scale=1e-30, rate=0.3, bits=26, shape=(7,), group="tensor", specials=[3e38, 1.0, 1.0, 1.0], seed=0)
def test_one_pass_exponent_search_equals_the_passes(scale, rate, bits, shape, group, specials, seed):
    torch.manual_seed(seed)
    x = torch.randn(shape) * scale
    flat = x.view(-1)
    flat[: len(specials)] = torch.tensor(specials[: flat.numel()], dtype=torch.float32)
    q = quant.get(f"dfxp:bits={bits},rate={rate},group={group}")
    assert torch.equal(q.needed_exponent(x), q.search_by_passes(x))


def _near(value: float, dtype: torch.dtype) -> list[float]:
    """value and its floating-point neighbours in dtype, both signs."""
    v = torch.tensor(value, dtype=dtype)
    out = [v, torch.nextafter(v, v + 1), torch.nextafter(v, v - 1)]
    return [float(t) for t in out] + [-float(t) for t in out]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("hi", [1.0, 0.75, 3.0, 1e-3])
def test_fused_clipped_backward_equals_the_mask(dtype, hi):
    quantizer = quant.get("sign@clipped")
    quantizer.clip_range = lambda: (-hi, hi)
    points = _near(hi, dtype) + _near(0.0, dtype) + _near(2 * hi, dtype) + [0.5 * hi, -0.99 * hi]
    x = torch.tensor(points, dtype=dtype)
    grad = torch.arange(1, len(points) + 1, dtype=dtype)
    fused = quantizer.estimator.backward(grad, x, quantizer)
    masked = torch.where((x >= -hi) & (x <= hi), grad, 0)
    assert torch.equal(fused, masked), (x, fused, masked)


@settings(max_examples=60, deadline=None)
@given(data=st.lists(st.floats(allow_nan=False, width=32), min_size=1, max_size=32))
def test_sign_maps_every_float_to_plus_or_minus_one(data):
    x = torch.tensor(data + [0.0, -0.0], dtype=torch.float32)
    expected = torch.where(x >= 0, 1.0, -1.0)
    assert torch.equal(quant.get("sign").hard(x), expected)


def test_stochastic_sign_is_certain_at_the_ends_and_binary_between():
    q = quant.get("stochastic_sign")
    assert torch.equal(q(torch.ones(SAMPLES)), torch.ones(SAMPLES))
    assert torch.equal(q(-torch.ones(SAMPLES)), -torch.ones(SAMPLES))
    middle = q(torch.linspace(-0.99, 0.99, SAMPLES))
    assert set(middle.unique().tolist()) == {-1.0, 1.0}
