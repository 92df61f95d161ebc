"""Two trainers never write into one run folder."""

import pytest

from qnnlab.train import RunExists, Trainer, resolve


def test_second_trainer_on_the_same_folder_is_refused(tmp_path):
    config = resolve("float", {"model": "mlp-small", "epochs": 1, "limit_steps": 2})
    first = Trainer(config, tmp_path / "run", quiet=True)
    with pytest.raises(RunExists, match="another process is training"):
        Trainer(config, tmp_path / "run", quiet=True)
    first.run()
