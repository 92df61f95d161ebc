"""Fuzzing of quantizer and estimator specs, every quantizer on non-finite values and odd shapes, and
every packed kernel against its plain PyTorch reference on arbitrary shapes (empty, K = 1, ragged
64-bit tails): each agrees with the reference or raises a clear ValueError."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qnnlab import kernels
from qnnlab.quant import registry

pytestmark = pytest.mark.bad_input
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

MALFORMED_SPECS = [
    "",
    "   ",
    "sign@",
    "@ste",
    "nosuch",
    "SIGN",
    "sign@nosuch",
    "sign@ste@ste",
    "int:bits=0",
    "int:bits=abc",
    "int:bits=",
    "int:bits=3.5",
    "int:bits=99",
    "int:bits=inf",
    "int:foo=1",
    "int:bits=2,bits=3",
    "int:bits=8,",
    "int:=8",
    "int:bits==8",
    "int::bits=8",
    "sign:bits=1",
    "uniform:bits=-1",
    "dfxp:bits=1",
    "dfxp:rate=2",
    "fixed:m=-1,n=2",
    "fixed:m=a",
    "sign@hardsigmoid:slope=-1",
    "sign@hardsigmoid:slope=nan",
    "sign@gumbel:tau=0",
    "sign@gumbel:tau=inf",
    "sign@ste:x=1",
    5,
    ["sign"],
    1.5,
]


@pytest.mark.parametrize("spec", MALFORMED_SPECS, ids=repr)
def test_a_malformed_spec_is_refused_by_name(spec):
    with pytest.raises(ValueError, match=r"spec|argument|range|must|quantizer|estimator"):
        registry.get(spec)


@FUZZ
@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz_0123456789:=,.@-+ ", max_size=30))
def test_any_text_is_a_quantizer_or_a_clear_error(text):
    try:
        quantizer = registry.get(text)
    except ValueError as exc:
        assert str(exc)
    else:
        assert quantizer(torch.linspace(-2, 2, 9)).shape == (9,)


DEFAULTS = registry.available()


@pytest.mark.parametrize("name", DEFAULTS)
def test_nan_stays_nan_and_infinity_does_not_become_nan_silently(name):
    quantizer = registry.get(name)
    x = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.3, -0.7, 2.0]).repeat(4, 1)
    y = quantizer(x)
    assert torch.isnan(y[:, 0]).all(), f"{name} turned NaN into {y[0, 0]}"
    assert torch.isfinite(y[:, 3:]).all() or bool(torch.isnan(y).all())  # a scale taken from inf poisons all


@settings(max_examples=25, deadline=None)
@given(
    st.sampled_from(DEFAULTS),
    st.lists(st.integers(0, 5), min_size=1, max_size=4),
    st.floats(-1e30, 1e30, allow_nan=False),
)
def test_every_quantizer_keeps_any_shape_and_gives_finite_values_for_finite_input(name, shape, scale):
    quantizer = registry.get(name)
    x = torch.randn(*shape) * scale
    y = quantizer(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


def signs(*shape):
    return torch.where(torch.rand(*shape) < 0.5, -1.0, 1.0)


@FUZZ
@given(st.integers(0, 5), st.integers(1, 200), st.integers(0, 5))
def test_packed_products_equal_the_float_product(m, k, n):
    a, b = signs(m, k), signs(n, k)
    assert torch.equal(kernels.unpack(kernels.pack(a), k), a)
    assert torch.equal(kernels.binary_matmul(kernels.pack(a), kernels.pack(b), k), (a @ b.T).to(torch.int32))


@FUZZ
@given(st.integers(0, 4), st.integers(1, 150), st.integers(1, 4))
def test_real_times_sign_products_equal_the_float_product(m, k, n):
    x, w = torch.randn(m, k), signs(n, k)
    torch.testing.assert_close(kernels.sign_weight_matmul(x, kernels.pack(w), k), x @ w.T, atol=1e-4, rtol=1e-4)
    panels = kernels.sign_weight_panels(kernels.pack(w), k, integer=False)
    looked_up = kernels.sign_weight_matmul(x, kernels.pack(w), k, panels)
    torch.testing.assert_close(looked_up, x @ w.T, atol=1e-4, rtol=1e-4)
    x8 = torch.randint(-128, 128, (m, k), dtype=torch.int8)
    panels = kernels.sign_weight_panels(kernels.pack(w), k, integer=True)
    exact = (x8.long() @ w.long().T).int()
    assert torch.equal(kernels.sign_weight_matmul(x8, kernels.pack(w), k, panels), exact)
    codes = torch.randint(0, 256, (m, k), dtype=torch.uint8)
    expected = codes.to(torch.float64) @ w.T.to(torch.float64)
    assert torch.equal(kernels.pixel_matmul(codes, kernels.pack(w).T.contiguous(), k).double(), expected)


@FUZZ
@given(st.integers(0, 4), st.integers(1, 100), st.integers(1, 3), st.integers(1, 3))
def test_bit_serial_products_equal_the_integer_product(m, k, a_bits, b_bits):
    a, b = torch.randint(0, 2**a_bits, (m, k)), torch.randint(0, 2**b_bits, (3, k))
    assert torch.equal(kernels.bitserial_matmul(a, b, a_bits, b_bits), a @ b.T)


@FUZZ
@given(st.integers(0, 4), st.integers(1, 130))
def test_threshold_packing_equals_comparing(m, n):
    y = torch.randn(m, n) * 4
    t, positive = torch.randn(n).double(), torch.rand(n) < 0.5
    constant = torch.where(torch.rand(n) < 0.2, torch.randint(0, 2, (n,)).double(), torch.tensor(-1.0).double())
    bits = torch.where(positive, y.double() >= t, y.double() <= t)
    bits = torch.where(constant >= 0, constant > 0, bits)
    assert torch.equal(kernels.unpack(kernels.threshold_pack(y, t, positive, constant), n), bits.float() * 2 - 1)


@FUZZ
@given(
    st.integers(1, 2),
    st.integers(1, 70),
    st.integers(1, 3),
    st.integers(1, 7),
    st.integers(1, 3),
    st.integers(1, 2),
    st.integers(0, 1),
)
def test_binary_convolution_equals_torch(batch, channels, out, size, kernel, stride, padding):
    kernel = min(kernel, size + 2 * padding)
    x, w = signs(batch, channels, size, size), signs(out, channels, kernel, kernel)
    got = kernels.binary_conv2d(
        kernels.pack_nhwc(x), kernels.pack_filters(w), channels, (kernel, kernel), stride, padding
    )
    assert torch.equal(got, F.conv2d(x, w, stride=stride, padding=padding).to(torch.int32))


PACKED = kernels.pack(signs(3, 70))
BAD_KERNEL_CALLS = {
    "words that do not fit k": lambda: kernels.binary_matmul(PACKED, PACKED, 200),
    "k zero": lambda: kernels.binary_matmul(PACKED, PACKED, 0),
    "float instead of packed": lambda: kernels.binary_matmul(PACKED.float(), PACKED, 70),
    "1-D operand": lambda: kernels.binary_matmul(PACKED[0], PACKED, 70),
    "unpack with the wrong k": lambda: kernels.unpack(PACKED, 300),
    "codes outside the bits": lambda: kernels.bitserial_matmul(
        torch.full((2, 3), 9), torch.ones(2, 3, dtype=torch.long), 2, 2
    ),
    "float codes": lambda: kernels.bitserial_matmul(torch.ones(2, 3), torch.ones(2, 3), 2, 2),
    "pixel codes not uint8": lambda: kernels.pixel_matmul(
        torch.ones(2, 70, dtype=torch.int32), PACKED.T.contiguous(), 70
    ),
    "threshold table too short": lambda: kernels.threshold_pack(
        torch.randn(2, 70), torch.zeros(60).double(), torch.ones(70, dtype=torch.bool), -torch.ones(70).double()
    ),
    "threshold table too long": lambda: kernels.threshold_pack(
        torch.randn(2, 70), torch.zeros(70).double(), torch.ones(90, dtype=torch.bool), -torch.ones(70).double()
    ),
    "positive not bool": lambda: kernels.threshold_pack(
        torch.randn(2, 70), torch.zeros(70).double(), torch.ones(70), -torch.ones(70).double()
    ),
    "conv input not channel-packed": lambda: kernels.binary_conv2d(
        torch.ones(1, 4, 4, 3, dtype=torch.long), PACKED, 70, (1, 1)
    ),
    "conv filters of another size": lambda: kernels.binary_conv2d(
        kernels.pack_nhwc(signs(1, 70, 4, 4)), PACKED, 70, (3, 3)
    ),
    "panels of another matrix": lambda: kernels.binary_matmul(
        kernels.pack(signs(7, 1000)),
        kernels.pack(signs(600, 1000)),
        1000,
        kernels.binary_panels(kernels.pack(signs(64, 1000))),
    ),
    "panels as floats": lambda: kernels.binary_matmul(
        kernels.pack(signs(7, 1000)),
        kernels.pack(signs(600, 1000)),
        1000,
        kernels.binary_panels(kernels.pack(signs(600, 1000))).double(),
    ),
    "weight-only product of int32 inputs": lambda: kernels.sign_weight_matmul(
        torch.ones(2, 70, dtype=torch.int32), PACKED, 70
    ),
    "weight-only panels of another matrix": lambda: kernels.sign_weight_matmul(
        torch.randn(2, 70), PACKED, 70, torch.zeros(1, 2, 16, dtype=torch.int32)
    ),
    "weight-only panels for int8 inputs given float inputs": lambda: kernels.sign_weight_matmul(
        torch.randn(2, 70), PACKED, 70, torch.zeros(1, 8, 32, dtype=torch.int16)
    ),
    "weight-only panels of a single row": lambda: kernels.sign_weight_panels(PACKED[0], 70, integer=True),
    "negative padding": lambda: kernels.binary_conv2d(kernels.pack_nhwc(signs(1, 70, 4, 4)), PACKED, 70, (1, 1), 1, -1),
    "an input smaller than the kernel": lambda: kernels.binary_conv2d(
        kernels.pack_nhwc(signs(1, 70, 2, 2)), kernels.pack_filters(signs(3, 70, 3, 3)), 70, (3, 3)
    ),
}


@pytest.mark.parametrize("case", BAD_KERNEL_CALLS)
def test_a_kernel_given_inconsistent_operands_refuses_them(case):
    with pytest.raises(ValueError):
        BAD_KERNEL_CALLS[case]()
