"""Every recipe learns: 100 steps on the embedded data must beat chance by a wide margin."""

import pytest

from qnnlab.train import Trainer, recipe_names, resolve


@pytest.mark.parametrize("recipe", recipe_names())
def test_recipe_learns(tmp_path, recipe):
    config = resolve(recipe, {"model": "mlp-small", "epochs": 1, "limit_steps": 100, "threads": 1})
    metrics = Trainer(config, tmp_path / recipe, quiet=True).run()
    assert metrics[-1]["test_accuracy"] > 0.4, metrics[-1]  # chance is 0.1
