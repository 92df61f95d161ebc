"""What a trained network holds: histograms of latent weights and of what each quantizer receives."""

import json

import pytest
import torch
from torch import nn

from qnnlab import data
from qnnlab.analysis.inside import histogram, inside
from qnnlab.cli import main
from qnnlab.run.config import resolve
from qnnlab.run.model import build_model

SHAPE_ONLY = data.ImageData.empty((1, 28, 28), 10)


def test_a_bnn_records_each_layer_with_what_its_input_quantizer_receives():
    torch.manual_seed(0)
    model = build_model(resolve("bnn", {"model": "mlp-small", "model_options": {"widths": [32, 16]}}), SHAPE_ONLY)
    model.train()
    seen = []
    hidden = model[4]  # the second linear layer: what reaches it is checked against the record
    hidden.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach().clone()))
    inputs = torch.rand(50, 1, 28, 28) * 2 - 1
    record = inside(model, inputs)
    assert model.training and len(hidden._forward_pre_hooks) == 1  # mode restored, its own hooks removed
    layers = record["layers"]
    assert [entry["kind"] for entry in layers] == ["QuantLinear"] * 3 and record["samples"] == 50
    second = layers[1]
    assert second["weights"]["weight"]["quantizer"] == "sign" and second["weights"]["weight"]["shape"] == [16, 32]
    received = second["activations"]["input"]
    assert received["quantizer"] == "sign" and received["count"] == 50 * 32 == sum(received["counts"])
    assert received["outside_unit"] == pytest.approx(float((seen[0].abs() > 1).float().mean()), abs=1e-4)
    assert received["low"] == pytest.approx(float(seen[0].min()), rel=1e-4)
    assert record["first_layer"]["shape"] == [784] and len(record["first_layer"]["units"]) == 8
    assert record["first_layer"]["units"][0][:3] == [round(float(v), 4) for v in model[1].weight.detach()[0, :3]]
    json.dumps(record)  # a plain JSON record


def test_a_float_network_is_recorded_layer_by_layer_too():
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 8), nn.ReLU(), nn.Linear(8, 3))
    record = inside(model, torch.rand(10, 1, 28, 28), units=2)
    assert [entry["activations"]["input"]["count"] for entry in record["layers"]] == [7840, 80]
    assert record["layers"][1]["weights"]["weight"]["quantizer"] == "float"
    assert record["layers"][1]["activations"]["input"]["low"] >= 0  # after the ReLU
    assert len(record["first_layer"]["units"]) == 2


def test_histograms_of_edge_cases():
    assert histogram(torch.tensor([])) == {"count": 0}
    constant = histogram(torch.full((5,), 2.0), bins=4)
    assert constant["count"] == 5 == sum(constant["counts"]) and constant["outside_unit"] == 1.0
    with_nan = histogram(torch.tensor([0.5, float("nan"), -3.0]), bins=2)
    assert with_nan["count"] == 2 and with_nan["counts"] == [1, 1] and with_nan["outside_unit"] == 0.5


def test_eval_inside_writes_the_record_of_a_trained_run(tmp_path, capsys):
    run = tmp_path / "run"
    quick = ["--model", "mlp-small", "--dataset", "fashion-mnist-mini", "--set", "limit_steps=2", "--quiet"]
    assert main(["train", "--recipe", "bnn", "--epochs", "1", "--out", str(run), *quick]) == 0
    capsys.readouterr()
    assert main(["eval", str(run), "--inside"]) == 0
    assert json.loads(capsys.readouterr().out) == {"inside": str(run / "inside.json")}
    record = json.loads((run / "inside.json").read_text())
    assert record["samples"] == 1000 and record["layers"][0]["activations"]["input"]["quantizer"] == "float"
