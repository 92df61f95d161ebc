"""Every recipe learns: 100 steps on the embedded data must beat chance by a wide margin."""

import re
import runpy
from pathlib import Path

import pytest

from qnnlab.train import Trainer, recipe_names, resolve

from conftest import shakespeare_root

SCRIPTS = Path(__file__).parents[2] / "scripts"


@pytest.mark.parametrize("recipe", recipe_names())
def test_recipe_learns(tmp_path, recipe):
    if resolve(recipe).model.endswith("-lm"):  # language models: bits per character, 6.0 for uniform guessing
        if shakespeare_root() is None:
            pytest.skip("Tiny Shakespeare not found beside the checkout or in the cache")
        config = resolve(
            recipe,
            {
                "model_options": {"embed": 16, "hidden": 64, "layers": 1},
                "epochs": 1,
                "data_root": shakespeare_root(),
                "limit_steps": 80,
                "batch_size": 16,
                "seq_len": 50,
                "threads": 1,
            },
        )
        metrics = Trainer(config, tmp_path / recipe, quiet=True).run()
        assert metrics[-1]["val_bpc"] < 5.0, metrics[-1]  # a dead net stays near 6; 80 steps reach ~4.5
        return
    config = resolve(recipe, {"model": "mlp-small", "epochs": 1, "limit_steps": 100, "threads": 1})
    metrics = Trainer(config, tmp_path / recipe, quiet=True).run()
    assert metrics[-1]["test_accuracy"] > 0.4, metrics[-1]  # chance is 0.1


def test_ebp_runs_all_inference_modes_and_resumes(tmp_path, capsys):
    from qnnlab.run.evaluate import evaluate_checkpoint

    config = resolve("ebp", {"model": "mlp-small", "epochs": 2, "limit_steps": 150})
    metrics = Trainer(config, tmp_path / "ebp", quiet=True).run()
    assert metrics[-1]["test_accuracy"] > 0.5 and metrics[-1]["lr"] == 0.0
    for mode in ("binary", "latent", "ensemble:3"):
        assert evaluate_checkpoint(str(tmp_path / "ebp"), mode)["test_accuracy"] > 0.3
    drift = runpy.run_path(str(SCRIPTS / "ebp_posterior_drift.py"))["main"]
    drift(str(tmp_path / "ebp"))
    flipped = [float(f) for f in re.findall(r"signs flipped ([\d.]+)%", capsys.readouterr().out)]
    assert len(flipped) == 3 and all(0 < f < 30 for f in flipped), flipped  # a wrong prior flips half
    with pytest.raises(SystemExit, match="does not exist"):
        drift(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="binary-weight MLPs"):
        Trainer(resolve("ebp", {"model": "cnn"}), tmp_path / "bad", quiet=True)
