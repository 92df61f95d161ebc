"""Configurations that cannot learn stop on the first batch with the layer, quantizer and fix named."""

import pytest

from qnnlab.cli import main
from qnnlab.train import Trainer, resolve
from qnnlab.train.probe import DegenerateQuantization

QUICK = {"model": "mlp-small", "dataset": "fashion-mnist-mini", "epochs": 1, "limit_steps": 3, "threads": 1}


@pytest.mark.parametrize(
    "rules, words",
    [
        (
            [{"match": "*", "input": "sign"}, {"match": "first", "keep": True}],
            "input quantizer sign makes every input 1",
        ),
        ([{"weight": "int:bits=2"}], "weight quantizer int:bits=2 maps every initial weight of weight to 0"),
    ],
)
def test_a_constant_quantizer_stops_the_run_before_training(tmp_path, rules, words):
    config = resolve("float", {**QUICK, "rules": rules})  # ReLU activations, as a new user leaves them
    with pytest.raises(DegenerateQuantization, match="cannot learn") as error:
        Trainer(config, tmp_path / "run", quiet=True)
    assert words in str(error.value) and "layer 4" in str(error.value) and "--allow-degenerate" in str(error.value)
    assert not (tmp_path / "run" / "checkpoint.safetensors").exists()
    allowed = resolve("float", {**QUICK, "rules": rules, "allow_degenerate": True})
    assert Trainer(allowed, tmp_path / "allowed", quiet=True).run()[-1]["test_accuracy"] < 0.5


def test_the_probe_leaves_the_run_exactly_as_it_was(tmp_path):
    checked = Trainer(resolve("bnn", QUICK), tmp_path / "checked", quiet=True).run()
    unchecked = Trainer(resolve("bnn", {**QUICK, "allow_degenerate": True}), tmp_path / "unchecked", quiet=True).run()
    strip = [{k: v for k, v in m.items() if k != "epoch_seconds"} for m in (checked[-1], unchecked[-1])]
    assert strip[0] == strip[1]  # same model, same random draws


def test_the_cli_flag(tmp_path, capsys):
    args = [
        "train",
        "--model",
        "mlp-small",
        "--dataset",
        "fashion-mnist-mini",
        "--epochs",
        "1",
        "--quiet",
        "--set",
        "limit_steps=2",
        "--set",
        "rules=[{weight: 'int:bits=2'}]",
    ]
    assert main([*args, "--out", str(tmp_path / "a")]) == 2
    assert "cannot learn" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "b"), "--allow-degenerate"]) == 0
