"""Quantized layers: exact float equivalence, quantized forward values, XNOR scaling, DropConnect, RNNs."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qnnlab import quant
from qnnlab.nn import DropConnectLinear, QuantConv2d, QuantGRU, QuantLinear, QuantLSTM


def copy_params(dst, src):
    dst.load_state_dict(src.state_dict(), strict=False)
    return dst


@pytest.mark.parametrize("shape", [(7, 5), (3, 4, 5)])
@pytest.mark.parametrize("bias", [True, False])
def test_float_quant_linear_equals_nn_linear_exactly(shape, bias):
    torch.manual_seed(0)
    ref = nn.Linear(5, 6, bias=bias)
    layer = copy_params(QuantLinear(5, 6, bias=bias), ref)
    x = torch.randn(shape, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    y, y_ref = layer(x), ref(x2)
    assert torch.equal(y, y_ref)
    y.square().sum().backward()
    y_ref.square().sum().backward()
    assert torch.equal(x.grad, x2.grad) and torch.equal(layer.weight.grad, ref.weight.grad)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(kernel_size=3, padding=1),
        dict(kernel_size=(3, 2), stride=2, padding=(1, 0), bias=False),
        dict(kernel_size=3, dilation=2, groups=2),
        dict(kernel_size=3, padding="same"),
        dict(kernel_size=3, padding=1, padding_mode="reflect"),
    ],
)
def test_float_quant_conv_equals_nn_conv_exactly(kwargs):
    torch.manual_seed(0)
    ref = nn.Conv2d(4, 6, **kwargs)
    layer = copy_params(QuantConv2d(4, 6, **kwargs), ref)
    x = torch.randn(2, 4, 9, 8, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    y, y_ref = layer(x), ref(x2)
    assert torch.equal(y, y_ref)
    y.sum().backward()
    y_ref.sum().backward()
    assert torch.equal(x.grad, x2.grad) and torch.equal(layer.weight.grad, ref.weight.grad)


def test_binary_linear_multiplies_signs():
    torch.manual_seed(0)
    layer = QuantLinear(8, 3, weight_quantizer="sign", input_quantizer="sign")
    x = torch.randn(4, 8)
    expected = F.linear(torch.where(x >= 0, 1.0, -1.0), torch.where(layer.weight >= 0, 1.0, -1.0), layer.bias)
    assert torch.allclose(layer(x), expected)
    assert set(layer.quantized_weight().unique().tolist()) == {-1.0, 1.0}
    assert layer.weight.abs().max() < 1  # latent weights stay real-valued


def test_latent_weights_receive_the_estimators_gradient():
    layer = QuantLinear(2, 1, bias=False, weight_quantizer="sign")
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.5, 3.0]]))
    layer(torch.tensor([[1.0, 1.0]])).sum().backward()
    assert layer.weight.grad.tolist() == [[1.0, 0.0]]  # clipped STE: |w| > 1 gets none


def test_xnor_conv_applies_alpha_and_k():
    torch.manual_seed(0)
    layer = QuantConv2d(3, 2, 3, padding=1, bias=False, weight_quantizer="xnor_weight", input_quantizer="xnor_act")
    x = torch.randn(1, 3, 5, 5)
    y = layer(x)
    w = layer.weight.detach()
    alpha = w.abs().mean(dim=(1, 2, 3))
    a = x.abs().mean(dim=1, keepdim=True)
    k = F.conv2d(a, torch.full((1, 1, 3, 3), 1 / 9), padding=1)
    expected = F.conv2d(torch.sign(x), torch.sign(w), padding=1) * alpha.reshape(1, -1, 1, 1) * k
    assert torch.allclose(y, expected, atol=1e-5)


def test_xnor_linear_scales_by_mean_abs_input():
    torch.manual_seed(0)
    layer = QuantLinear(6, 2, weight_quantizer="xnor_weight", input_quantizer="xnor_act")
    x = torch.randn(3, 6)
    alpha = layer.weight.detach().abs().mean(dim=1)
    expected = F.linear(torch.sign(x), torch.sign(layer.weight.detach())) * alpha * x.abs().mean(1, keepdim=True)
    assert torch.allclose(layer(x), expected + layer.bias, atol=1e-5)


def test_grad_quantizer_rounds_the_error_at_the_output():
    layer = QuantLinear(2, 2, bias=False, grad_quantizer="grad_pow2:exponents=4")
    x = torch.tensor([[1.0, 2.0]])
    layer(x).backward(torch.tensor([[0.3, -0.7]]))
    assert torch.allclose(layer.weight.grad, torch.tensor([[0.25], [-0.5]]) * x)


def test_quantizer_roles_are_checked():
    with pytest.raises(ValueError, match="grad_quantizer"):
        QuantLinear(2, 2, weight_quantizer="grad_dorefa:4")
    with pytest.raises(ValueError, match="backward one"):
        QuantLinear(2, 2, grad_quantizer="sign")


def test_stateful_quantizer_objects_are_not_shared():
    q = quant.get("dfxp:bits=8")
    a, b = QuantLinear(2, 2, weight_quantizer=q), QuantLinear(2, 2, weight_quantizer=q)
    assert a.weight_quantizer is not b.weight_quantizer and a.weight_quantizer == b.weight_quantizer


def test_dropconnect_masks_per_sample_and_is_unbiased():
    torch.manual_seed(0)
    layer = DropConnectLinear(16, 4, p=0.5)
    x = torch.randn(1, 16).expand(4000, 16)
    y = layer(x)
    assert not torch.allclose(y[0], y[1])  # each sample draws its own mask
    mean_output = F.linear(x[:1], layer.weight, layer.bias)
    assert torch.allclose(y.mean(0), mean_output[0], atol=0.15)
    layer.eval()
    assert torch.equal(layer(x[:2]), F.linear(x[:2], layer.weight, layer.bias))
    with pytest.raises(ValueError):
        DropConnectLinear(2, 2, p=1.0)


def test_dropconnect_chunks_give_the_same_result():
    """The materialised path (off the CPU) in chunks of samples equals it in one piece."""
    torch.manual_seed(0)
    layer = DropConnectLinear(8, 3, p=0.3)
    x = torch.randn(10, 8)
    torch.manual_seed(1)
    whole = layer._materialised(x, layer.weight)
    layer.chunk_elements = 24 * 3  # three samples per chunk
    torch.manual_seed(1)
    assert torch.allclose(layer._materialised(x, layer.weight), whole)


def test_dropconnect_draws_its_masks_from_torchs_generator_and_trains():
    layer = DropConnectLinear(12, 5, p=0.5)
    x = torch.randn(7, 12)
    torch.manual_seed(3)
    first = layer(x)
    torch.manual_seed(3)
    assert torch.equal(layer(x), first) and not torch.equal(layer(x), first)
    first.sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("cls, ref_cls", [(QuantLSTM, nn.LSTM), (QuantGRU, nn.GRU)])
@pytest.mark.parametrize("batch_first", [False, True])
def test_float_quant_rnn_matches_torch(cls, ref_cls, batch_first):
    torch.manual_seed(0)
    ref = ref_cls(5, 7, num_layers=2, batch_first=batch_first)
    layer = copy_params(cls(5, 7, num_layers=2, batch_first=batch_first), ref)
    x = torch.randn(3, 4, 5)
    out, state = layer(x)
    out_ref, state_ref = ref(x)
    assert torch.allclose(out, out_ref, atol=1e-6)
    for a, b in zip(
        state if isinstance(state, tuple) else (state,), state_ref if isinstance(state_ref, tuple) else (state_ref,)
    ):
        assert torch.allclose(a, b, atol=1e-6)
    out.sum().backward()
    out_ref.sum().backward()
    assert torch.allclose(layer.weight_hh_l0.grad, ref.weight_hh_l0.grad, atol=1e-5)


def test_quant_lstm_quantizes_weights_and_state():
    torch.manual_seed(0)
    layer = QuantLSTM(4, 6, weight_quantizer="int:bits=4", state_quantizer="int:bits=2")
    out, (h, c) = layer(torch.randn(5, 2, 4))
    assert set(out.unique().tolist()) <= {-1.0, 0.0, 1.0}
    assert set(layer.quantized_weights()) == {"weight_ih_l0", "weight_hh_l0"}
    w = layer.quantized_weights()["weight_hh_l0"]
    assert torch.allclose(w * 7, torch.round(w * 7))
    with pytest.raises(ValueError, match="expects input of shape"):
        layer(torch.randn(5, 4))


@pytest.mark.parametrize("layer", ["linear", "conv"])
def test_an_update_input_quantizer_changes_only_the_weight_gradient(layer):
    """Lin et al. 2016's quantized back propagation: dL/dW = dL/dy * pow2(x); y and dL/dx as without it."""
    from qnnlab.nn import QuantConv2d, QuantLinear
    from qnnlab.quant.pow2 import round_pow2

    torch.manual_seed(0)
    if layer == "linear":
        plain, x = QuantLinear(6, 4), torch.randn(5, 6)
        paper = QuantLinear(6, 4, update_input_quantizer="pow2:min_exp=-5,max_exp=2")
    else:
        plain, x = QuantConv2d(3, 4, 3, padding=1), torch.randn(2, 3, 5, 5)
        paper = QuantConv2d(3, 4, 3, padding=1, update_input_quantizer="pow2:min_exp=-5,max_exp=2")
    paper.load_state_dict(plain.state_dict())
    grads = {}
    for name, module, inputs in (("plain", plain, x), ("paper", paper, x), ("rounded", plain, round_pow2(x, -5, 2))):
        module.zero_grad()
        inputs = inputs.clone().requires_grad_()
        y = module(inputs)
        (y * torch.linspace(-1, 1, y.numel()).reshape(y.shape)).sum().backward()
        grads[name] = (y.detach(), inputs.grad, module.weight.grad.clone(), module.bias.grad.clone())
    assert torch.equal(grads["paper"][0], grads["plain"][0])  # the forward pass is untouched
    torch.testing.assert_close(grads["paper"][1], grads["plain"][1])  # dL/dx through the real input
    torch.testing.assert_close(grads["paper"][2], grads["rounded"][2])  # dL/dW from the rounded input
    assert not torch.allclose(grads["paper"][2], grads["plain"][2])
    torch.testing.assert_close(grads["paper"][3], grads["plain"][3])
    assert "update_input=pow2" in repr(paper)


def test_rprelu_shifts_and_slopes_each_channel():
    from qnnlab.nn import RPReLU

    layer = RPReLU(3)
    x = torch.randn(4, 3, 5, 5)
    assert torch.equal(layer(x.abs()), x.abs())  # the identity above zero at the start
    with torch.no_grad():
        layer.gamma.copy_(torch.tensor([1.0, 0.0, -1.0]))
        layer.zeta.copy_(torch.tensor([0.5, 0.0, 0.0]))
    expected = F.prelu(x - layer.gamma.view(1, 3, 1, 1), layer.prelu.weight) + layer.zeta.view(1, 3, 1, 1)
    assert torch.allclose(layer(x), expected)
    assert layer(torch.randn(2, 3)).shape == (2, 3)
    layer(x).sum().backward()
    assert layer.gamma.grad is not None and layer.zeta.grad is not None


def test_dropconnect_moment_matching_draws_the_masked_sums_gaussian():
    torch.manual_seed(0)
    layer = DropConnectLinear(16, 3, p=0.5, inference="moments").eval()
    x = torch.randn(1, 16).expand(20000, 16)
    with torch.no_grad():
        y = layer(x)
        mean = F.linear(x[:1], layer.weight, layer.bias)[0]
        std = F.linear(x[:1] ** 2, layer.weight**2)[0].sqrt()  # p / (1 - p) = 1
    assert torch.allclose(y.mean(0), mean, atol=4 * float(std.max()) / 141) and torch.allclose(y.std(0), std, rtol=0.05)
    with torch.no_grad():  # the masks' own moments, drawn by the training path
        layer.train()
        masked = torch.stack([layer(x[:1].expand(4000, 16)) for _ in range(3)]).reshape(-1, 3)
    assert torch.allclose(masked.std(0), std, rtol=0.1)
    with pytest.raises(ValueError, match="inference='median'"):
        DropConnectLinear(2, 2, inference="median")
