"""Optimizers and update rules against their formulas."""

import math

import pytest
import torch
from torch import nn

from qnnlab.nn import QuantLinear
from qnnlab.optim import Bop, ShiftAdaMax, build_optimizer, build_schedule
from qnnlab.quant import ap2


def test_shift_adamax_step_matches_its_formula():
    p = nn.Parameter(torch.tensor([0.5, -0.2, 0.0]))
    opt = ShiftAdaMax([p], lr=0.003, betas=(0.9, 0.999))
    g = torch.tensor([0.3, -0.05, 0.0])
    p.grad = g.clone()
    opt.step()
    m = 0.1 * g
    v = g.abs()
    expected = torch.tensor([0.5, -0.2, 0.0]) - float(ap2(torch.tensor(0.003 / 0.1))) * m * ap2(1 / v).nan_to_num(
        posinf=0.0
    )
    assert torch.allclose(p.detach(), expected)
    # the step-size factor and 1/v are powers of two: each product is a shift
    assert float(ap2(torch.tensor(0.03))) == 2.0**-5


def test_bop_flips_only_on_a_strong_consistent_signal():
    w = nn.Parameter(torch.tensor([0.3, -0.7, 0.2, -0.1]))
    b = nn.Parameter(torch.tensor([0.0]))
    opt = Bop([{"params": [w], "binary": True}, {"params": [b]}], gamma=0.5, threshold=0.1, lr=0.1)
    assert w.tolist() == [1.0, -1.0, 1.0, -1.0]  # latent-free: the weights are the binary values
    w.grad = torch.tensor([1.0, -1.0, 0.1, 1.0])
    b.grad = torch.tensor([1.0])
    opt.step()
    # m = 0.5 g: |m| > 0.1 and sign(m) = sign(w) flips entries 0 and 1; entry 2 is too weak; 3 disagrees
    assert w.tolist() == [-1.0, 1.0, 1.0, -1.0]
    assert b.item() == pytest.approx(-0.1)  # Adam's first step moves by lr


def test_latent_clipping_and_glorot_rates():
    model = nn.Sequential(QuantLinear(30, 20, weight_quantizer="sign"), nn.ReLU(), nn.Linear(20, 2))
    opt = build_optimizer(model, "sgd", lr=10.0, momentum=0.0, lr_scale="glorot", clip_latent=1.0)
    rates = sorted(g["lr"] for g in opt.param_groups)
    assert rates == pytest.approx(sorted([10.0, 10.0 / math.sqrt(1.5 / 50)]))
    model(torch.randn(4, 30)).sum().backward()
    opt.step()
    assert model[0].weight.abs().max() <= 1.0  # clipped after the step
    assert model[2].weight.abs().max() > 1.0  # float layers are not clipped


def test_latent_rounding_keeps_update_precision():
    model = nn.Sequential(QuantLinear(8, 4, weight_quantizer="dfxp:bits=10"))
    opt = build_optimizer(model, "sgd", lr=0.1)
    from qnnlab.optim.rules import add_latent_rounding

    add_latent_rounding(opt, [model[0].weight], "fixed:m=0,n=4")
    model(torch.randn(2, 8)).sum().backward()
    opt.step()
    w = model[0].weight.detach()
    assert torch.equal(w * 16, torch.round(w * 16))


def test_bop_needs_binary_weights_and_rejects_bad_names():
    model = nn.Sequential(QuantLinear(4, 3, weight_quantizer="sign@ste"), nn.Linear(3, 2))
    opt = build_optimizer(model, "bop", lr=1e-3)
    assert any(g["binary"] for g in opt.param_groups)
    with pytest.raises(ValueError, match="unknown optimizer"):
        build_optimizer(model, "lamb", lr=1e-3)


def test_schedules():
    p = nn.Parameter(torch.zeros(1))
    for kind, expected in (
        ("cosine", [1.0, 0.5, 0.0]),
        ("constant", [1.0, 1.0, 1.0]),
        ("exponential", [1.0, 0.1, 0.01]),
    ):
        opt = torch.optim.SGD([p], lr=1.0)
        sched = build_schedule(
            opt, kind, total_steps=20, steps_per_epoch=10, final_fraction=0.0 if kind == "cosine" else 0.01
        )
        seen = []
        for step in range(21):
            if step % 10 == 0:
                seen.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        assert seen == pytest.approx(expected, abs=1e-9), kind
