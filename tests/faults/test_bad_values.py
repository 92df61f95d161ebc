"""Bad values that used to pass silently or end in a traceback: each now gets one clear error."""

import pytest

from qnnlab.analysis import EnergyTable
from qnnlab.cli import main
from qnnlab.data import ImageData
from qnnlab.nn import quantize_model
from qnnlab.run import build_model, resolve
from qnnlab.run.config import from_dict, recipe_values
from qnnlab.train.tasks import ImageClassification

pytestmark = pytest.mark.bad_input


@pytest.mark.parametrize("field, value", [("epochs", True), ("batch_size", False), ("lr", True), ("seed", 1.5)])
def test_bools_and_fractions_are_not_counts(field, value):
    with pytest.raises(ValueError, match=f"{field}={value!r} should be"):
        from_dict({field: value})


@pytest.mark.parametrize(
    "rule, words",
    [
        ({"weight": "sign", "keep": "false"}, "keep must be true or false"),
        ({"match": 5, "weight": "sign"}, "match must be text"),
        ({"weight": 2}, "weight must be a quantizer spec"),
    ],
)
def test_rule_values_of_the_wrong_type(rule, words):
    import torch.nn as nn

    with pytest.raises(ValueError, match=words):
        quantize_model(nn.Sequential(nn.Linear(3, 2)), [rule])


@pytest.mark.parametrize(
    "value, words",
    [("crop", "augment='crop': give none, or flip and shift"), ("shift:20", "N from 1 to 8"), (2, "should be a str")],
)
def test_augment_specs_are_checked_with_the_config(value, words):
    with pytest.raises(ValueError, match=words):
        from_dict({"augment": value})


def test_mlp_widths_must_be_positive():
    with pytest.raises(ValueError, match=r"widths=\[0\]"):
        build_model(resolve("float", {"model_options": {"widths": [0]}}), ImageData.empty((1, 28, 28), 10))


def test_inherit_names_one_recipe(tmp_path):
    (tmp_path / "r.yaml").write_text("inherit: [bnn]\n")
    with pytest.raises(ValueError, match="must be one recipe name"):
        recipe_values(str(tmp_path / "r.yaml"))


@pytest.mark.parametrize("text, words", [("fp32_add 1e999\n", "finite"), ("fp32_add 1\nfp32_add 2\n", "already given")])
def test_energy_tables_refuse_infinity_and_repeats(tmp_path, text, words):
    (tmp_path / "e.txt").write_text(text)
    with pytest.raises(ValueError, match=words):
        EnergyTable.from_file(tmp_path / "e.txt")


def test_an_empty_test_split_is_named_before_training():
    with pytest.raises(ValueError, match="no test images"):
        ImageClassification(resolve("float"), ImageData.empty((1, 28, 28), 10))


def test_a_folder_where_a_checkpoint_belongs_is_named(tmp_path, capsys):
    (tmp_path / "c.safetensors").mkdir()
    assert main(["eval", str(tmp_path / "c.safetensors")]) == 2
    assert "is a folder without checkpoint.safetensors" in capsys.readouterr().err


def test_an_unexpected_error_is_one_line_not_a_traceback(tmp_path, capsys, monkeypatch):
    import qnnlab.run.evaluate

    def explode(*_args, **_kwargs):
        raise KeyError("metadata")

    monkeypatch.setattr(qnnlab.run.evaluate, "evaluate_checkpoint", explode)
    assert main(["eval", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "KeyError" in err and "QNNLAB_DEBUG=1" in err


@pytest.mark.fault
def test_a_run_that_diverges_in_the_last_updates_of_an_epoch_keeps_its_good_checkpoint(tmp_path, monkeypatch):
    import json

    from qnnlab.train import Trainer, TrainingDiverged

    config = resolve("float", {"model": "mlp-small", "dataset": "fashion-mnist-mini", "epochs": 2, "limit_steps": 3})
    trainer = Trainer(config, tmp_path / "run", quiet=True)
    evaluate = trainer.task.evaluate
    calls = []

    def second_epoch_nan(model):  # the loss became NaN after the epoch's last step
        calls.append(1)
        result = evaluate(model)
        return result if len(calls) == 1 else {**result, "test_loss": float("nan")}

    monkeypatch.setattr(trainer.task, "evaluate", second_epoch_nan)
    with pytest.raises(TrainingDiverged, match="test_loss not finite.*checkpoint of epoch 1 .* is kept"):
        trainer.run()
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1]  # no NaN line, the good record kept
    from qnnlab.run import checkpoint

    assert checkpoint.load(tmp_path / "run" / "checkpoint.safetensors")[2]["epoch"] == 0


def test_a_damaged_checkpoint_is_refused_and_malformed_metadata_named(tmp_path):
    import torch
    from safetensors.torch import save_file

    from qnnlab.run import checkpoint

    path = tmp_path / "c.safetensors"
    checkpoint.save(path, {"w": torch.ones(64)}, {}, {"epoch": 0})
    data = bytearray(path.read_bytes())
    data[-64:] = bytes(64)  # a zeroed page of weights
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="do not match its checksum"):
        checkpoint.load(path)
    save_file({"model/w": torch.ones(2)}, str(path), metadata={"format": "qnnlab-checkpoint", "version": "1"})
    with pytest.raises(ValueError, match="metadata is malformed"):
        checkpoint.load(path)
