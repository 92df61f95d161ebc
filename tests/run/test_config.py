"""Recipes resolve, inherit and reject bad fields."""

import pytest

from qnnlab.run.config import FIELDS, TrainConfig, parse_overrides, recipe_names, resolve

PAPER_RECIPES = {
    "lowprec2014",
    "binaryconnect",
    "binaryconnect-stochastic",
    "fewmult",
    "fewmult-ternary",
    "fewmult-pow2-errors",
    "fewmult-ternary-pow2-errors",
    "binaryconnect-paper",
    "bnn-paper",
    "qnn-grad6",
    "dropconnect-all",
    "bnn-activations-first",
    "lowprec2014-forward",
    "dropconnect-moments",
    "lowprec2014-maxout",
    "lowprec2014-fixed",
    "bnn",
    "bnn-shift",
    "qnn",
    "xnor",
    "bwn",
    "dorefa",
    "dropconnect",
    "float",
}


def test_every_field_is_documented_with_a_unit():
    assert set(FIELDS) == set(TrainConfig().to_dict())
    assert all(unit and doc for unit, doc in FIELDS.values())


def test_every_paper_has_a_recipe_that_resolves():
    assert PAPER_RECIPES <= set(recipe_names())
    for name in recipe_names():
        config = resolve(name)
        assert config.recipe == name and config.description


def test_inheritance_and_overrides():
    config = resolve("bnn-shift", {"lr": 0.01, "epochs": 3})
    assert config.norm == "shift" and config.optimizer == "shift_adamax" and config.clip_latent == 1.0
    assert config.lr == 0.01 and config.epochs == 3
    assert resolve("bnn", {"lr": 1}).lr == 1.0  # an integer where a float is expected
    plus = resolve("bnn-plus", {"model_options": {"widths": [64], "shortcut": True}})
    assert plus.model_options == {"shortcut": True, "widths": [64]}  # merged key by key, not replaced
    assert resolve("bnn-plus", {"model_options": {"shortcut": False}}).model_options == {"shortcut": False}


def test_recipe_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("inherit: bnn\nlr: 0.005\n")
    config = resolve(str(path))
    assert config.recipe == "mine" and config.lr == 0.005 and config.rules == resolve("bnn").rules


@pytest.mark.parametrize(
    "recipe, overrides, words",
    [
        ("bnn", {"lrate": 0.1}, "unknown field"),
        ("bnn", {"epochs": "many"}, "should be a int"),
        ("nosuch", {}, "unknown recipe"),
        ("bnn", {"epochs": -1}, "epochs=-1 must be > 0"),
        ("bnn", {"lr": 0}, "must be > 0"),
        ("bnn", {"grad_clip": -1.0}, "must be >= 0"),
    ],
)
def test_bad_configs(recipe, overrides, words):
    with pytest.raises(ValueError, match=words):
        resolve(recipe, overrides)


def test_broken_recipe_files(tmp_path):
    (tmp_path / "a.yaml").write_text("inherit: b.yaml\n".replace("b.yaml", str(tmp_path / "b.yaml")))
    (tmp_path / "b.yaml").write_text("inherit: " + str(tmp_path / "a.yaml") + "\n")
    with pytest.raises(ValueError, match="inheritance loop"):
        resolve(str(tmp_path / "a.yaml"))
    (tmp_path / "c.yaml").write_text("lr: [unclosed\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        resolve(str(tmp_path / "c.yaml"))


def test_parse_overrides():
    assert parse_overrides(["lr=0.1", "rules=[{weight: sign}]", "clip_latent=null"]) == {
        "lr": 0.1,
        "rules": [{"weight": "sign"}],
        "clip_latent": None,
    }
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides(["lr"])


def test_atomic_writes_make_ordinary_files(tmp_path):
    import os

    from qnnlab.storage import atomic_write

    atomic_write(tmp_path / "f.txt", lambda p: p.write_text("x"))
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's 0600
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]  # no temporary file left


def test_glorot_initialisation_draws_within_the_glorot_bound_with_zero_biases():
    import math

    import torch

    from qnnlab.data import ImageData
    from qnnlab.run import initial_model

    model = initial_model(resolve("bnn-paper", {"model": "mlp-small"}), ImageData.empty((1, 28, 28), 10))
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    for layer in layers:
        fan_out, fan_in = layer.weight.shape
        bound = math.sqrt(6 / (fan_in + fan_out))
        assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.9 * bound
        assert layer.bias is None or not layer.bias.any()
    default = initial_model(resolve("bnn", {"model": "mlp-small"}), ImageData.empty((1, 28, 28), 10))
    first = next(m for m in default.modules() if isinstance(m, torch.nn.Linear))
    assert first.weight.abs().max() <= 1 / math.sqrt(first.weight.shape[1])  # PyTorch's own bound
