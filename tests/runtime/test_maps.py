"""Convolutional networks whose activations are real or k-bit (BinaryConnect, BWN, DoReFa, QNN,
ternary weights, float) or XNOR-Net's scaled signs: their convolutions run with the
weights and input quantizers of the runtime's linear ops, zero padding after quantizing as in
training (XNOR-Net's on the binary convolution's register tiles), batch norm as a per-channel
affine map; BNN+ carries its real-valued stream around each binary convolution (``residual``).
The logits match PyTorch's evaluation."""

import pytest
import torch

from qnnlab import data, runtime
from qnnlab.data.batches import to_unit_range
from qnnlab.run.evaluate import weight_mode
from qnnlab.run.model import build_model
from qnnlab.train import resolve


@pytest.mark.parametrize(
    "recipe, product",
    [
        ("binaryconnect", "sign_weight_linear"),
        ("bwn", "sign_weight_linear"),
        ("dorefa", "codes_linear"),
        ("fewmult-ternary", "ternary_linear"),
        ("xnor", "xnor_linear"),
        ("qnn", "grid_linear"),
        ("bnn-plus", "residual"),
        ("float", "conv"),
    ],
)
def test_convolutional_recipes_with_real_or_k_bit_activations_run_packed(recipe, product, tmp_path):
    torch.manual_seed(0)
    shape = (1, 28, 28)
    config = resolve(recipe, {"model": "cnn", "model_options": {"width": 0.25}})
    model = build_model(config, data.ImageData.empty(shape, 10)).eval()
    with torch.no_grad():  # batch-norm statistics as training leaves them, away from the identity
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2)
    runtime.export(model, tmp_path / "c.qnn", input_shape=shape, input_grid=runtime.PIXELS)
    packed = runtime.load(tmp_path / "c.qnn")
    kinds = [op["op"] for op in packed.ops] + [op["inner"]["op"] for op in packed.ops if "inner" in op]
    assert product in kinds and "channel_affine" in kinds and "flatten_maps" in kinds
    x = to_unit_range(data.load("fashion-mnist-mini").test_x[:64])
    with torch.no_grad(), weight_mode(model, "binary"):
        expected = model(x)
    scale = expected.abs().max()
    for got in (packed(x), packed.reference(x), torch.cat([packed(x[i : i + 1]) for i in range(3)])):
        assert torch.allclose(got, expected[: len(got)], atol=1e-4 * scale, rtol=1e-4)


def test_a_quantized_convolution_names_a_bad_inner_op():
    from qnnlab.runtime import ops

    spec = {
        "op": "quantized_conv",
        "layer": "c",
        "kernel": [3, 3],
        "stride": 1,
        "padding": 1,
        "channels": 2,
        "out_channels": 4,
    }
    for inner in (None, {"op": "binary_linear"}, {"op": "quantized_conv"}):
        with pytest.raises(ValueError, match="inner op must be one of"):
            ops.build({**spec, "inner": inner}, {})


def test_a_convolution_on_a_grid_without_zero_pads_after_quantizing(tmp_path):
    """Inputs quantized to a grid that misses 0 (8 bits over [-1, 1]): training pads the quantized
    input with zeros, and so does the runtime, whatever its quantizer makes of 0."""
    from torch import nn

    from qnnlab.nn import QuantConv2d

    torch.manual_seed(0)
    model = nn.Sequential(
        QuantConv2d(1, 4, 3, padding=1, weight_quantizer="sign", input_quantizer="float"),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        QuantConv2d(4, 4, 3, padding=1, weight_quantizer="sign", input_quantizer="uniform:lo=-1.0"),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, 10),
    ).eval()
    runtime.export(model, tmp_path / "c.qnn", input_shape=(1, 8, 8))
    packed = runtime.load(tmp_path / "c.qnn")
    x = torch.rand(5, 1, 8, 8) * 2 - 1
    with torch.no_grad():
        expected = model(x)
    assert torch.allclose(packed(x), expected, atol=1e-4) and torch.allclose(packed.reference(x), expected, atol=1e-4)


def test_an_xnor_convolution_reading_the_input_images_equals_pytorch(tmp_path):
    """As a first layer the convolution takes the NCHW images on both paths."""
    from torch import nn

    from qnnlab.nn import QuantConv2d

    torch.manual_seed(0)
    conv = QuantConv2d(3, 8, 3, padding=1, weight_quantizer="xnor_weight", input_quantizer="xnor_act")
    model = nn.Sequential(conv, nn.Flatten(), nn.Linear(8 * 6 * 6, 10)).eval()
    runtime.export(model, tmp_path / "x.qnn", input_shape=(3, 6, 6))
    packed = runtime.load(tmp_path / "x.qnn")
    x = torch.randn(4, 3, 6, 6)
    with torch.no_grad():
        expected = model(x)
    assert packed.ops[0]["op"] == "quantized_conv" and packed.ops[0]["first"]
    assert torch.allclose(packed(x), expected, atol=1e-4) and torch.allclose(packed.reference(x), expected, atol=1e-4)


@pytest.mark.parametrize(
    "pool", [{"kernel_size": 2, "ceil_mode": True}, {"kernel_size": 2, "stride": 1}, {"kernel_size": (2, 3)}]
)
def test_an_average_pooling_the_runtime_would_compute_differently_is_refused(tmp_path, pool):
    from torch import nn

    from qnnlab.nn import QuantConv2d
    from qnnlab.runtime import ExportError

    model = nn.Sequential(
        QuantConv2d(1, 4, 3, padding=1, weight_quantizer="sign", input_quantizer="float"),
        nn.ReLU(),
        nn.AvgPool2d(**pool),
        nn.Flatten(),
        nn.LazyLinear(10),
    )
    model(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ExportError, match="pools averages over square windows"):
        runtime.export(model.eval(), tmp_path / "c.qnn", input_shape=(1, 8, 8))
