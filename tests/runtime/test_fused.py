"""The fused convolution steps against the ops they replace, on odd geometries: channel counts
around word and panel edges, output channels not a multiple of the 32-channel panel, strides,
paddings wider than one, non-square kernels, pooling windows, maps whose rows end mid-tile."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from qnnlab import kernels
from qnnlab.runtime import fused
from qnnlab.runtime import ops as runtime_ops


def _signs(*shape):
    return torch.where(torch.rand(*shape) < 0.5, -1.0, 1.0)


def _threshold(n, layout, scale):
    """A threshold op over n channels (features): thresholds spread like trained ones, a few
    negative batch-norm scales and a few constant channels."""
    tensors = {
        "t": torch.empty(n, dtype=torch.float64).uniform_(-scale, scale),
        "pos": torch.rand(n) < 0.8,
        "const": torch.where(torch.rand(n) < 0.1, torch.randint(0, 2, (n,)).double(), torch.tensor(-1.0).double()),
    }
    spec = {"op": "threshold", "layer": "t", "threshold": "t", "positive": "pos", "constant": "const", "layout": layout}
    return runtime_ops.Threshold(spec, tensors)


def _conv(kind, channels, out_channels, kernel, stride, padding):
    kh, kw = kernel
    filters = _signs(out_channels, channels, kh, kw)
    if kind == "binary_conv":
        weight = kernels.pack_filters(filters)
    else:
        weight = kernels.pack(filters.reshape(out_channels, -1))
    tensors = {"w": weight, "b": torch.randn(out_channels)}
    spec = {
        "op": kind,
        "layer": "c",
        "weight": "w",
        "bias": "b",
        "channels": channels,
        "out_channels": out_channels,
        "kernel": [kh, kw],
        "stride": stride,
        "padding": padding,
    }
    return runtime_ops.BinaryConv(spec, tensors) if kind == "binary_conv" else runtime_ops.RealConv(spec, tensors)


@pytest.mark.parametrize(
    "channels, out_channels, kernel, stride, padding, pool, size",
    [
        (1, 1, (3, 3), 1, 1, 2, 7),
        (63, 33, (3, 3), 1, 1, 2, 9),
        (65, 70, (3, 3), 2, 1, 1, 10),
        (130, 32, (1, 1), 1, 0, 3, 9),
        (64, 96, (5, 3), 1, 2, 2, 8),
        (3, 7, (3, 3), 1, 0, 1, 5),
        (16, 64, (3, 3), 1, 1, 1, 13),
        (64, 40, (3, 3), 1, 1, 4, 17),  # pooling windows that straddle the six-pixel tiles
        (8, 33, (3, 3), 1, 1, 7, 15),  # windows wider than a tile
        (70, 64, (5, 5), 1, 2, 1, 2),  # a map lower than the kernel: no row lies inside
    ],
)
@pytest.mark.parametrize("layout", ["nhwc", "flat"])
def test_a_binary_convolution_with_pooling_and_threshold_equals_its_ops(
    channels, out_channels, kernel, stride, padding, pool, size, layout
):
    torch.manual_seed(channels + out_channels + size)
    conv = _conv("binary_conv", channels, out_channels, kernel, stride, padding)
    ops = [conv]
    if pool > 1:
        ops.append(runtime_ops.MaxPool({"op": "maxpool", "layer": "p", "kernel": pool, "stride": pool}, {}))
    shape = (channels, size, size)
    for op in ops:
        shape = op.out_shape(shape)
    _, h, w = shape
    features = out_channels if layout == "nhwc" else out_channels * h * w
    ops.append(_threshold(features, layout, scale=kernel[0] * kernel[1] * channels / 4))
    step, replaced = fused.ConvPoolThreshold.match(ops, 0)
    assert replaced == len(ops)
    x = kernels.pack_nhwc(_signs(3, channels, size, size))
    expected = x
    for op in ops:
        expected = op.packed(expected)
    assert torch.equal(step(x), expected)
    assert torch.equal(step(x[:1]), expected[:1])  # one sample: the serial kernel


@pytest.mark.parametrize(
    "channels, out_channels, kernel, stride, padding, size",
    [
        (1, 64, (3, 3), 1, 1, 28),
        (3, 20, (3, 3), 2, 1, 11),
        (1, 130, (5, 5), 1, 2, 9),
        (2, 1, (1, 3), 1, 0, 6),
        (1, 8, (5, 5), 1, 2, 3),  # every window cut on both sides: each class of taps its own ranges
    ],
)
def test_the_first_convolution_on_pixels_is_exact_from_the_integer_codes(
    channels, out_channels, kernel, stride, padding, size
):
    torch.manual_seed(out_channels + size)
    conv = _conv("real_conv", channels, out_channels, kernel, stride, padding)
    threshold = _threshold(out_channels, "nhwc", scale=kernel[0] * kernel[1] * channels / 3)
    step, _ = fused.PixelConvThreshold.match([conv, threshold], 0)
    codes = torch.randint(0, 256, (4, channels, size, size)).double()
    x = (codes / 127.5 - 1).float()
    exact = F.conv2d(codes / 127.5 - 1, conv.filters.double(), stride=stride, padding=padding)
    values = exact.float() + conv.bias.reshape(-1, 1, 1)
    expected = threshold.packed(values.permute(0, 2, 3, 1).contiguous())
    assert torch.equal(step(x), expected)
    assert torch.equal(step(x[:1]), expected[:1])


def test_a_first_convolution_too_wide_for_exact_float32_sums_is_not_fused():
    wide, narrow = _conv("real_conv", 8000, 2, (3, 3), 1, 1), _conv("real_conv", 7000, 2, (3, 3), 1, 1)
    assert fused.PixelConvThreshold.match([wide, _threshold(2, "nhwc", 1.0)], 0) is None  # 9 8000 255 > 2^24
    assert fused.PixelConvThreshold.match([narrow, _threshold(2, "nhwc", 1.0)], 0) is not None


def _pixel_linear(k, n, tiles, monkeypatch):
    """A first layer of n units on k pixels with random +-1 weights and bias, its product on AMX
    tiles, VNNI tiles or in torch (``tiles``: amx, vnni, torch)."""
    from qnnlab.kernels import _amx, _int8_tiles

    if tiles != "torch" and not _int8_tiles.available():
        pytest.skip("this CPU (or LLVM) has no AVX-512 VNNI")
    if tiles == "amx" and not _amx.available():
        pytest.skip("this CPU has no AMX, or Linux does not grant it")
    monkeypatch.setattr(_int8_tiles, "available", lambda: tiles != "torch")
    monkeypatch.setattr(_amx, "available", lambda: tiles == "amx")
    torch.manual_seed(k + n)
    weights = _signs(n, k)
    tensors = {"w": kernels.pack(weights), "s": weights.sum(1).double(), "b": torch.randn(n)}
    spec = {"op": "real_linear", "layer": "l", "weight": "w", "weight_sum": "s", "bias": "b", "k": k}
    return runtime_ops.RealLinear(spec, tensors)


@pytest.mark.parametrize("tiles", ["amx", "vnni", "torch"])
@pytest.mark.parametrize("k, n", [(784, 2048), (100, 70), (1, 1), (65, 129)])
def test_the_first_dense_layer_with_its_threshold_equals_its_ops(k, n, tiles, monkeypatch):
    """On AMX or VNNI tiles where the CPU has them, else torch's int8 GEMM: the same bits as the ops."""
    linear = _pixel_linear(k, n, tiles, monkeypatch)
    threshold = _threshold(n, "rows", scale=k**0.5)
    step, replaced = fused.PixelLinearThreshold.match([linear, threshold], 0)
    assert (
        replaced == 2 and (step.panels is not None) == (tiles != "torch") and (step.amx_from <= 45) == (tiles == "amx")
    )
    x = torch.randint(0, 256, (45, k)).float() / 127.5 - 1  # AMX: two tiles of 16 samples, one of 13
    expected = threshold.packed(linear.packed(x))
    assert torch.equal(step(x), expected) and torch.equal(step(x[:1]), expected[:1])


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("tiles", ["amx", "vnni", "torch"])
@pytest.mark.parametrize("k, n", [(784, 2048), (100, 70), (1, 1), (65, 129)])
def test_a_first_dense_layer_whose_output_stays_real_equals_its_ops(k, n, tiles, affine, monkeypatch):
    """BNN+'s first layer (no threshold after it) and its batch norm: masked additions at batch 1,
    AMX or VNNI tiles at a batch where the CPU has them, else the ops; their float32 values bit for bit."""
    linear = _pixel_linear(k, n, tiles, monkeypatch)
    norm = runtime_ops.Affine(
        {"op": "affine", "layer": "n", "scale": "s", "shift": "h"}, {"s": torch.randn(n), "h": torch.randn(n)}
    )
    assert fused.PixelLinear.match([linear, _threshold(n, "rows", scale=1.0)], 0) is None
    step, replaced = fused.PixelLinear.match([linear, norm] if affine else [linear], 0)
    assert replaced == (2 if affine else 1) and (step.panels is not None) == (tiles != "torch")
    assert (step.amx_from <= 45) == (tiles == "amx")
    x = torch.randint(0, 256, (45, k)).float() / 127.5 - 1
    expected = norm.packed(linear.packed(x)) if affine else linear.packed(x)
    assert torch.equal(step(x), expected) and torch.equal(step(x[:1]), expected[:1])
    with pytest.raises(ValueError, match=f"takes {k} features"):
        step(x[:, :-1] if k > 1 else torch.zeros(2, 2))


def test_the_first_dense_layers_integer_ranges_fire_exactly_where_its_float_threshold_does():
    """``code_ranges`` against every possible sum of three pixel codes (-765..765), with bounds put
    exactly on a sum's value (the ties), either sign, units that always or never fire, and padding."""
    rng = np.random.default_rng(0)
    k, units = 3, 40
    weight_sums = rng.choice([-3.0, -1.0, 1.0, 3.0], units)
    shifts, offset = 128 * weight_sums, (128 / 127.5 - 1) * weight_sums
    bias = rng.normal(size=units).astype(np.float32)
    sign = rng.choice([-1.0, 1.0], units)
    sums = np.arange(-255 * k, 255 * k + 1)

    def values(s):  # the ops' arithmetic, per unit (columns) and sum (rows)
        return ((s[:, None] - shifts) / 127.5 + offset).astype(np.float32) + bias

    bound = sign * values(rng.choice(sums, 1))[0].astype(np.float64)  # ties
    bound[::3] = rng.normal(size=len(bound[::3]))
    bound[5], bound[6] = -np.inf, np.inf  # always, never
    padded = [np.append(v, 0.0) for v in (shifts, offset, bias, sign, bound)]
    low, high = fused.code_ranges(*padded, k, units)
    fires = values(sums).astype(np.float64) * sign >= bound
    inside = (low[:units] <= sums[:, None]) & (sums[:, None] <= high[:units])
    assert np.array_equal(inside, fires) and fires[:, 5].all() and not fires[:, 6].any()
    assert low[units] > high[units]  # the padding never fires


@pytest.mark.parametrize("batch, n, bias", [(13, 64, False), (1, 2048, False), (7, 100, True)])
def test_a_bireal_block_of_an_mlp_equals_its_ops(batch, n, bias):
    """``ResidualDense``: the binary product, batch norm and sum with the real stream per tile, the
    ops' float steps bit for bit (odd widths leave a partial panel)."""
    from qnnlab.runtime.maps import Residual

    torch.manual_seed(n + batch)
    tensors = {
        "t": torch.zeros(n, dtype=torch.float64),
        "p": torch.ones(n, dtype=torch.bool),
        "c": torch.zeros(n, dtype=torch.float64),
        "w": kernels.pack(_signs(n, n)),
        "s": torch.rand(n) + 0.5,
        "h": torch.randn(n),
        "b": torch.randn(n),
    }
    spec = {
        "op": "residual",
        "layer": "r",
        "branch": [
            {
                "op": "threshold",
                "layer": "r.sign",
                "layout": "rows",
                "threshold": "t",
                "positive": "p",
                "constant": "c",
            },
            {"op": "binary_linear", "layer": "r.0", "weight": "w", "k": n, **({"bias": "b"} if bias else {})},
            {"op": "affine", "layer": "r.1", "scale": "s", "shift": "h"},
        ],
        "shortcut": [],
    }
    block = Residual(spec, tensors)
    step, replaced = fused.ResidualDense.match([block], 0)
    assert replaced == 1
    x = torch.randn(batch, n)
    x[0, :3] = 0.0  # signs at the threshold itself
    assert torch.equal(step(x), block.packed(x))
    with pytest.raises(ValueError, match=f"takes {n} features"):
        step(x[:, :-1])
    spec["shortcut"] = [{"op": "affine", "layer": "r.2", "scale": "s", "shift": "h"}]
    assert fused.ResidualDense.match([Residual(spec, tensors)], 0) is None


def _conv_block(channels, out_channels, kernel, stride, padding, pool, shortcut, tensors):
    """A Bi-Real block of a CNN as the exporter writes it: threshold, binary_conv, [maxpool], channel
    affine; shortcut none, avgpool or a thresholded 1x1 binary_conv with its channel affine."""
    kh, kw = kernel

    def threshold(name, n):
        tensors[f"{name}.t"] = torch.empty(n, dtype=torch.float64).uniform_(-0.5, 0.5)
        tensors[f"{name}.p"] = torch.rand(n) < 0.8
        tensors[f"{name}.c"] = torch.where(torch.rand(n) < 0.1, 1.0, -1.0).double()
        keys = {"threshold": f"{name}.t", "positive": f"{name}.p", "constant": f"{name}.c"}
        return {"op": "threshold", "layer": name, "layout": "nhwc", **keys}

    def conv(name, k, cin, cout):
        tensors[f"{name}.w"] = kernels.pack_filters(_signs(cout, cin, *k))
        tensors[f"{name}.b"] = torch.randn(cout)
        geometry = {"channels": cin, "out_channels": cout, "kernel": list(k)}
        return {"op": "binary_conv", "layer": name, "weight": f"{name}.w", "bias": f"{name}.b", **geometry}

    def affine(name, n):
        tensors[f"{name}.s"], tensors[f"{name}.h"] = torch.randn(n), torch.randn(n)  # negative scales too
        return {"op": "channel_affine", "layer": name, "scale": f"{name}.s", "shift": f"{name}.h"}

    branch = [
        threshold("b.sign", channels),
        {**conv("b", kernel, channels, out_channels), "stride": stride, "padding": padding},
    ]
    if pool > 1:
        branch.append({"op": "maxpool", "layer": "b.pool", "kernel": pool, "stride": pool})
    branch.append(affine("b.norm", out_channels))
    short = {
        "none": [],
        "avgpool": [{"op": "avgpool", "layer": "s.pool", "kernel": pool}],
        "conv": [
            threshold("s.sign", channels),
            {**conv("s", (1, 1), channels, out_channels), "stride": stride, "padding": 0},
            affine("s.norm", out_channels),
        ],
    }[shortcut]
    return {"op": "residual", "layer": "r", "branch": branch, "shortcut": short}


@pytest.mark.parametrize(
    "channels, out_channels, kernel, stride, padding, pool, shortcut, size",
    [
        (64, 64, (3, 3), 1, 1, 2, "avgpool", 28),
        (64, 64, (3, 3), 1, 1, 1, "none", 7),
        (63, 63, (3, 3), 1, 1, 3, "avgpool", 9),  # odd maps: pooling drops the last row and column
        (64, 128, (3, 3), 1, 1, 1, "conv", 14),
        (65, 33, (3, 3), 2, 1, 1, "conv", 11),  # strided: the shortcut's 1x1 convolution strides too
        (3, 3, (1, 1), 1, 0, 1, "none", 6),
    ],
)
def test_a_bireal_block_of_a_cnn_equals_its_ops(
    channels, out_channels, kernel, stride, padding, pool, shortcut, size, monkeypatch
):
    """``ResidualConv``: the binary convolution, pooling, batch norm and shortcut per output row,
    the ops' float steps bit for bit."""
    from qnnlab.runtime.maps import Residual

    torch.manual_seed(channels + out_channels + size)
    tensors = {}
    spec = _conv_block(channels, out_channels, kernel, stride, padding, pool, shortcut, tensors)
    block = Residual(spec, tensors)
    block.out_shape((channels, size, size))
    step, replaced = fused.ResidualConv.match([block], 0)
    assert replaced == 1
    x = torch.randn(3, size, size, channels)
    x[0, 0, 0, :5] = 0.0  # signs at the threshold itself
    expected = block.packed(x)
    assert torch.equal(step(x), expected)
    assert torch.equal(step(x[:1]), expected[:1])
    from_array = step(x.numpy())  # an array in, an array out (``fused.ArrayStep``)
    assert isinstance(from_array, np.ndarray) and np.array_equal(from_array, expected.numpy())
    monkeypatch.setattr(kernels, "parallel_threads", lambda: 1)  # one thread: the serial kernel
    assert torch.equal(step(x), expected)
    with pytest.raises(ValueError, match=f"expected \\(B, H, W, {channels}\\) maps"):
        step(x[..., :-1])


def test_a_bireal_block_of_a_cnn_with_other_ops_is_left_to_its_ops():
    from qnnlab.runtime.maps import Residual

    tensors = {}
    spec = _conv_block(8, 8, (3, 3), 1, 1, 2, "avgpool", tensors)
    spec["branch"][2] = {"op": "maxpool", "layer": "b.pool", "kernel": 3, "stride": 2}  # overlapping windows
    assert fused.ResidualConv.match([Residual(spec, tensors)], 0) is None
    spec = _conv_block(8, 8, (3, 3), 1, 1, 1, "none", tensors)
    spec["shortcut"] = [{"op": "channel_affine", "layer": "s", "scale": "b.norm.s", "shift": "b.norm.h"}]
    assert fused.ResidualConv.match([Residual(spec, tensors)], 0) is None


@pytest.mark.parametrize(
    "channels, out_channels, kernel, stride, padding, size, affine",
    [(1, 64, (3, 3), 1, 1, 28, True), (3, 20, (3, 3), 2, 1, 11, False), (1, 8, (5, 5), 1, 2, 3, True)],
)
def test_the_first_convolution_whose_output_stays_real_is_exact_from_the_integer_codes(
    channels, out_channels, kernel, stride, padding, size, affine, monkeypatch
):
    """``PixelConv`` (BNN+): the exact values float32(x . w) + bias, then the batch norm in two
    float32 roundings, where the ops' float32 GEMM is within rounding of them."""
    from qnnlab.runtime.maps import ChannelAffine

    torch.manual_seed(out_channels + size)
    conv = _conv("real_conv", channels, out_channels, kernel, stride, padding)
    norm = ChannelAffine(
        {"op": "channel_affine", "layer": "n", "scale": "s", "shift": "h"},
        {"s": torch.randn(out_channels), "h": torch.randn(out_channels)},
    )
    assert fused.PixelConv.match([conv, _threshold(out_channels, "nhwc", 1.0)], 0) is None
    step, replaced = fused.PixelConv.match([conv, norm] if affine else [conv], 0)
    assert replaced == (2 if affine else 1)
    codes = torch.randint(0, 256, (4, channels, size, size)).double()
    x = (codes / 127.5 - 1).float()
    exact = F.conv2d(codes / 127.5 - 1, conv.filters.double(), stride=stride, padding=padding)
    values = (exact.float() + conv.bias.reshape(-1, 1, 1)).permute(0, 2, 3, 1)
    expected = (values * norm.scale).add_(norm.shift) if affine else values
    assert torch.equal(step(x), expected)
    assert torch.equal(step(x[:1]), expected[:1])
    monkeypatch.setattr(kernels, "parallel_threads", lambda: 1)  # one thread: the serial kernel
    assert torch.equal(step(x), expected)
    ops = norm.packed(conv.packed(x)) if affine else conv.packed(x)
    torch.testing.assert_close(step(x), ops, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("first", [True, False])
def test_a_float_first_convolution_on_pixels_runs_the_same_kernel_within_rounding(first):
    """``PixelConv`` on a float first convolution (a real-valued first layer): its sums of codes
    times float weights in float32, within rounding of the ops; a float convolution inside the
    network (NHWC maps, not pixels) is left to its op."""
    from qnnlab.runtime.maps import ChannelAffine, Conv

    torch.manual_seed(5)
    tensors = {"w": torch.randn(70, 2, 3, 3) * 0.2, "b": torch.randn(70), "s": torch.randn(70), "h": torch.randn(70)}
    geometry = {"channels": 2, "out_channels": 70, "kernel": [3, 3], "stride": 1, "padding": 1, "first": first}
    conv = Conv({"op": "conv", "layer": "c", "weight": "w", "bias": "b", **geometry}, tensors)
    norm = ChannelAffine({"op": "channel_affine", "layer": "n", "scale": "s", "shift": "h"}, tensors)
    match = fused.PixelConv.match([conv, norm], 0)
    if not first:
        assert match is None
        return
    step, replaced = match
    assert replaced == 2
    x = (torch.randint(0, 256, (3, 2, 9, 11)).float() / 127.5 - 1).float()
    expected = norm.packed(conv.packed(x))
    torch.testing.assert_close(step(x), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(step(x[:1]), expected[:1], rtol=1e-5, atol=1e-5)
