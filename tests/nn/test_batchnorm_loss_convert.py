"""Shift-based batch norm against batch norm, the squared hinge loss, and model conversion."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qnnlab.nn import (
    QuantConv2d,
    QuantLinear,
    QuantLSTM,
    ShiftBatchNorm1d,
    ShiftBatchNorm2d,
    SquaredHingeLoss,
    quantize_model,
)
from qnnlab.quant import ap2

BOUND = 2.0**1.25  # documented elementwise bound of shift BN against exact BN


def test_ap2_definition():
    x = torch.tensor([0.0, 3.0, -3.0, 0.7, 1.0, -0.1, 6.0])
    assert ap2(x).tolist() == [0.0, 4.0, -4.0, 0.5, 1.0, -0.125, 8.0]
    ratio = ap2(x[1:]) / x[1:]
    assert (ratio >= 2**-0.5 - 1e-6).all() and (ratio <= 2**0.5 + 1e-6).all()


@pytest.mark.parametrize(
    "cls, ref_cls, shape",
    [
        (ShiftBatchNorm1d, nn.BatchNorm1d, (64, 5)),
        (ShiftBatchNorm1d, nn.BatchNorm1d, (16, 5, 7)),
        (ShiftBatchNorm2d, nn.BatchNorm2d, (8, 5, 6, 6)),
    ],
)
def test_shift_batchnorm_within_documented_ap2_bound(cls, ref_cls, shape):
    torch.manual_seed(0)
    shift, ref = cls(5), ref_cls(5)
    with torch.no_grad():
        for m in (shift, ref):
            m.weight.copy_(torch.tensor([0.3, 1.0, 2.2, -0.8, 1.4]))
            m.bias.copy_(torch.tensor([0.1, -0.2, 0.0, 0.5, 1.0]))
    x = torch.randn(shape) * 3 + 1
    for mode in ("train", "eval"):
        getattr(shift, mode)()
        getattr(ref, mode)()
        if mode == "eval":  # same running statistics, from several batches
            for _ in range(5):
                batch = torch.randn(shape) * 3 + 1
                shift.train()(batch), ref.train()(batch)
            shift.eval(), ref.eval()
        bias = shift.bias.reshape(1, -1, *([1] * (len(shape) - 2)))
        a, b = (shift(x) - bias).detach(), (ref(x) - bias).detach()
        ratio = a[b.abs() > 1e-4] / b[b.abs() > 1e-4]
        assert (ratio > 0).all(), mode  # signs are exact
        assert ratio.min() >= 1 / BOUND and ratio.max() <= BOUND, (mode, ratio.min(), ratio.max())
    assert torch.allclose(shift.running_mean, ref.running_mean, atol=1e-5)
    ratio = shift.running_var / ref.running_var
    assert ratio.min() >= 2**-0.5 - 1e-3 and ratio.max() <= 2**0.5 + 1e-3


def test_shift_batchnorm_backward_approximates_batchnorm_backward():
    torch.manual_seed(0)
    shift, ref = ShiftBatchNorm1d(6), nn.BatchNorm1d(6)
    x = (torch.randn(256, 6) * 2).requires_grad_(True)
    x2 = x.detach().clone().requires_grad_(True)
    dy = torch.randn(256, 6)
    shift(x).backward(dy)
    ref(x2).backward(dy)
    for a, b in ((x.grad, x2.grad), (shift.weight.grad, ref.weight.grad)):
        cosine = F.cosine_similarity(a.flatten(), b.flatten(), dim=0)
        assert cosine > 0.9, cosine
    assert torch.allclose(shift.bias.grad, ref.bias.grad)
    # every factor the backward pass multiplies with is a power of two: AP2(gamma) and s
    assert torch.equal(ap2(shift.weight.detach()), ap2(ap2(shift.weight.detach())))


def test_shift_batchnorm_is_a_batchnorm_for_state_dicts():
    ref = nn.BatchNorm2d(3)
    shift = ShiftBatchNorm2d(3)
    shift.load_state_dict(ref.state_dict())
    with pytest.raises(ValueError):
        shift(torch.randn(2, 3))


def test_squared_hinge_loss():
    out = torch.tensor([[0.5, -2.0, 0.2], [1.5, 0.0, -1.0]], requires_grad=True)
    target = torch.tensor([0, 2])
    # sample 0: (1-0.5)^2 + 0 + (1+0.2)^2 = 0.25 + 1.44; sample 1: (1+1.5)^2 + 1 + (1-(-1))^2 = 6.25 + 1 + 4
    assert SquaredHingeLoss("none")(out, target).tolist() == pytest.approx([1.69, 11.25])
    assert SquaredHingeLoss()(out, target).item() == pytest.approx((1.69 + 11.25) / 2)
    with pytest.raises(ValueError):
        SquaredHingeLoss()(out, torch.tensor([0]))
    with pytest.raises(ValueError):
        SquaredHingeLoss("avg")


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))


def test_quantize_model_follows_rules_and_keeps_weights():
    model = mlp()
    rules = [
        {"match": "*", "weight": "sign", "input": "sign"},
        {"match": "first", "input": "uniform:bits=8"},
        {"match": "last", "keep": True},
    ]
    q = quantize_model(model, rules)
    assert type(model[1]) is nn.Linear  # the original is untouched
    assert isinstance(q[1], QuantLinear) and str(q[1].input_quantizer) == "uniform"
    assert str(q[3].weight_quantizer) == "sign" and str(q[3].input_quantizer) == "sign"
    assert type(q[5]) is nn.Linear
    assert torch.equal(q[1].weight, model[1].weight)
    x = torch.rand(4, 16)
    assert q(x).shape == (4, 3)


def test_quantize_model_by_type_and_name_and_rnn():
    conv = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 4 * 4, 2))
    q = quantize_model(conv, [{"match": "Conv2d", "weight": "xnor_weight"}, {"match": "2", "weight": "int:4"}])
    assert isinstance(q[0], QuantConv2d) and str(q[2].weight_quantizer) == "int"
    lstm = nn.Module()
    lstm.rnn = nn.LSTM(3, 5, num_layers=2)
    q = quantize_model(lstm, {"weight": "int:bits=4", "state": "int:bits=4"})
    assert isinstance(q.rnn, QuantLSTM)
    assert torch.equal(q.rnn.weight_ih_l1, lstm.rnn.weight_ih_l1)
    again = quantize_model(q, {"weight": "sign"})  # re-quantizing a quantized model replaces the rules
    assert str(again.rnn.weight_quantizer) == "sign"


@pytest.mark.parametrize(
    "rules, words",
    [
        ({"match": "fc9", "weight": "sign"}, "matches no layer"),
        ({"wieght": "sign"}, "unknown rule key"),
        ({"weight": "nosuch"}, "unknown quantizer"),
        ({"state": "sign"}, "LSTM and GRU layers only"),
    ],
)
def test_quantize_model_rejects_bad_rules(rules, words):
    with pytest.raises(ValueError, match=words):
        quantize_model(mlp(), rules)


def test_quantize_model_needs_a_layer():
    with pytest.raises(ValueError, match="no Linear"):
        quantize_model(nn.Sequential(nn.ReLU()), {"weight": "sign"})
