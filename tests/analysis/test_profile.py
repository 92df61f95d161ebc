"""Profiler contracts: MACs equal PyTorch's FLOP counter, backward is twice forward, energy of a
float model by hand, memory, unsupported layers, energy tables, kernel repetition, CLI."""

import json

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from qnnlab import models
from qnnlab.analysis import EnergyTable, profile
from qnnlab.cli import main
from qnnlab.nn import QuantConv2d

FLOAT_MODELS = [("mlp", (1, 28, 28)), ("cnn", (1, 28, 28)), ("vgg-cifar", (3, 32, 32)), ("resnet18", (3, 64, 64))]


@pytest.mark.parametrize("name, shape", FLOAT_MODELS)
def test_forward_macs_equal_flop_counter(name, shape):
    model = models.build(name, shape=shape, classes=10)
    x = torch.randn(2, *shape)
    prof = profile(model, x)
    with FlopCounterMode(display=False) as counter:
        model.eval()(x)
    assert prof.macs("forward") == counter.get_total_flops() // 2
    assert prof.macs("forward") == prof.macs("forward", "fp32")
    assert prof.not_counted == []


@pytest.mark.parametrize("name, shape", FLOAT_MODELS)
def test_backward_macs_are_twice_forward_but_for_the_first_layer(name, shape):
    model = models.build(name, shape=shape, classes=10)
    prof = profile(model, torch.randn(2, *shape))
    first = next(lc for lc in prof.layers if any(o == "mac" for (_, o, _) in lc.counts))
    first_macs = prof.macs_of(first, "forward")
    # dL/dW for every layer; dL/dx for every layer except the first, whose input needs no gradient
    assert prof.macs("backward_weight") == prof.macs("forward")
    assert prof.macs("backward_input") == prof.macs("forward") - first_macs


def test_elementwise_work_is_not_counted_as_macs():
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 4), nn.BatchNorm1d(4), nn.ReLU())
    prof = profile(model, torch.randn(5, 8))
    assert prof.macs("forward") == 5 * 8 * 4
    assert prof.ops("forward", "cmp") == 20 and prof.ops("forward", "sqrt") == 4


def test_float_energy_matches_hand_computation():
    model = nn.Sequential(nn.Linear(20, 10, bias=False), nn.ReLU(), nn.Linear(10, 3, bias=False))
    prof = profile(model, torch.randn(4, 20), train=False)
    macs = 4 * 20 * 10 + 4 * 10 * 3
    relu_cmp = 4 * 10
    assert prof.compute_energy_pj("forward") == pytest.approx(macs * (3.7 + 0.9) + relu_cmp * 0.9)
    traffic_bits = 32 * (20 * 10 + 4 * 20 + 4 * 10) + 32 * (10 * 3 + 4 * 10 + 4 * 3)
    assert prof.memory_energy_pj("forward") == pytest.approx(traffic_bits * 1300 / 64)


def test_memory_of_a_binary_layer():
    model = nn.Sequential(QuantConv2d(3, 8, 3, bias=False, weight_quantizer="xnor_weight", input_quantizer="sign"))
    prof = profile(model, torch.randn(2, 3, 8, 8), optimizer="adam")
    memory = prof.memory_bits()
    assert memory["weights_latent"] == 32 * 216 and memory["weights_deployed"] == 216 + 32 * 8
    assert memory["optimizer_state"] == 64 * 216 and memory["gradients"] == 32 * 216
    assert prof.memory_bits("activations") == 2 * 3 * 8 * 8 * 2  # 1-bit values and 1-bit STE masks
    with pytest.raises(ValueError):
        prof.memory_bits("cache")


def test_unsupported_layers_are_reported_by_name():
    model = nn.Sequential(nn.Linear(4, 4), nn.GELU(), nn.Linear(4, 2))
    prof = profile(model, torch.randn(3, 4))
    assert prof.not_counted == ["1 (GELU)"]
    assert "1 (GELU)" in prof.to_dict()["not_counted"]


def test_energy_table_file(tmp_path):
    good = tmp_path / "table.txt"
    good.write_text("# my process\nfp32_mult 1.0\nfp32_add: 0.5\n")
    table = EnergyTable.from_file(good)
    assert table.mac("fp32") == 1.5 and table.values["int_add_8"] == 0.03
    with pytest.raises(ValueError, match="does not exist"):
        EnergyTable.from_file(tmp_path / "missing.txt")
    for text, words in (
        ("fp32_mult one\n", "line 1"),
        ("fp32_mult 1\nbogus 2\n", "line 2: unknown entry"),
        ("fp32_add -1\n", "must be >= 0"),
    ):
        bad = tmp_path / "bad.txt"
        bad.write_text(text)
        with pytest.raises(ValueError, match=words):
            EnergyTable.from_file(bad)


def test_width_pricing():
    table = EnergyTable()
    assert table.int_mult(8) == 0.2 and table.int_mult(32) == 3.1
    assert table.int_mult(4) == pytest.approx(0.05)  # quadratic below 8 bits
    assert table.int_add(4) == pytest.approx(0.015)  # linear
    assert table.mac("binary") < table.mac("int2") < table.mac("int8") < table.mac("fp16") < table.mac("fp32")


def test_kernel_repetition_counts_distinct_filters():
    conv = QuantConv2d(2, 4, 3, bias=False, weight_quantizer="sign")
    with torch.no_grad():
        pattern = torch.randn(3, 3)
        conv.weight[:, 0] = pattern  # 4 copies of one filter in input channel 0
        conv.weight[:2, 1] = pattern
        conv.weight[2:, 1] = -pattern  # its negation twice
    prof = profile(nn.Sequential(conv), torch.randn(1, 2, 5, 5), train=False)
    (row,) = prof.kernel_repetition()
    assert row["distinct_filters"] == 1 + 2 and row["distinct_up_to_sign"] == 1 + 1
    positions = 9
    assert row["ops_with_reuse"] == 3 * positions * 9 + 4 * 2 * positions


def test_xnor_speedup_model():
    conv = QuantConv2d(256, 8, 3, weight_quantizer="sign", input_quantizer="sign")
    prof = profile(nn.Sequential(conv), torch.randn(1, 256, 6, 6), train=False)
    (row,) = prof.xnor_speedups()
    assert row["theoretical_speedup"] == pytest.approx(64 * 256 * 9 / (256 * 9 + 64))  # 62.3x, as in the paper
    assert row["measured_speedup"] is None
    prof.measure_binary_convolutions(repeats=2)
    assert prof.xnor_speedups()[0]["measured_speedup"] > 0


def test_hidden_costs_name_what_removes_them():
    model = models.build("mlp", shape=(1, 28, 28), classes=10, widths=[32], rules=[{"weight": "stochastic_sign"}])
    prof = profile(model, torch.randn(8, 1, 28, 28), optimizer="adam")
    costs = {h["cost"]: h for h in prof.hidden_costs()}
    assert "shift" in costs["batch norm in training"]["removed_by"]
    assert "shift_adamax" in costs["optimizer update"]["removed_by"]
    assert "deterministic" in costs["random numbers"]["removed_by"]
    assert sum(h["share"] for h in costs.values()) <= 1.0 + 1e-9


def test_shift_variants_remove_divisions_and_roots():
    def hidden(norm, optimizer):
        model = models.build(
            "mlp", shape=(1, 28, 28), classes=10, widths=[32], norm=norm, rules=[{"weight": "sign", "input": "sign"}]
        )
        return profile(model, torch.randn(8, 1, 28, 28), optimizer=optimizer)

    plain, shifted = hidden("bn", "adam"), hidden("shift", "shift_adamax")
    assert plain.ops(op="sqrt") > 0 and plain.ops(op="div") > 0
    assert shifted.ops(op="sqrt") == 0 and shifted.ops(op="mul", phase="update") == 0


def test_language_model_profile():
    model = models.build(
        "lstm-lm",
        vocab=30,
        hidden=16,
        embed=8,
        layers=2,
        rules=[{"match": "LSTM", "weight": "int:bits=4", "state": "int:bits=4"}],
    )
    prof = profile(model, torch.randint(0, 30, (2, 5)))
    # layer 1: 8 float embedding inputs (fp32 x int4 weights) and 16 int4 states; layer 2: int4 both
    assert prof.macs("forward", "int4") == 2 * 5 * 4 * 16 * (16 + 16 + 16)
    assert prof.macs("forward", "fp32") == 2 * 5 * 4 * 16 * 8 + 2 * 5 * 16 * 30  # and the decoder
    assert prof.not_counted == []


def test_cli_analyze(tmp_path, capsys):
    out = tmp_path / "p.json"
    assert (
        main(
            [
                "analyze",
                "--recipe",
                "xnor",
                "--model",
                "cnn",
                "--train",
                "--batch",
                "4",
                "--json",
                str(out),
                "--plot",
                str(tmp_path / "p.png"),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "hidden cost" in text and "XNOR-Net speed-up model" in text
    data = json.loads(out.read_text())
    assert set(data["phases"]) == {"forward", "backward_input", "backward_weight", "update"}
    assert (tmp_path / "p.png").stat().st_size > 1000
    assert main(["analyze", "--input-shape", "3,x,32"]) == 2


def test_accumulator_width_follows_operands_and_fan_in():
    from qnnlab.analysis.rules import accumulator_bits

    assert accumulator_bits("binary", 1024) == 11  # a popcount of 1024 bits
    assert accumulator_bits("int4", 256) == 8 + 8
    assert accumulator_bits("add_int8", 784) == 8 + 10
    assert accumulator_bits("fp32", 10) == 32
    conv = QuantConv2d(64, 8, 3, weight_quantizer="sign", input_quantizer="sign")
    prof = profile(nn.Sequential(conv), torch.randn(1, 64, 5, 5), train=False)
    (layer,) = prof.layers
    assert layer.info["accumulator_bits"] == 11  # fan-in 576
    table = EnergyTable()
    expected = sum(n * (table.mac(k, 11) if o == "mac" else table.price(o, k)) for (_, o, k), n in layer.counts.items())
    assert prof.compute_energy_pj(layer=layer) == pytest.approx(expected)
    assert table.mac("binary", 11) < table.mac("binary", 32)
