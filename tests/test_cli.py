"""The qnnlab console script."""

import subprocess
import sys

from qnnlab import quant
from qnnlab.cli import main


def test_quantizers_lists_every_name_and_estimator(capsys):
    assert main(["quantizers"]) == 0
    out = capsys.readouterr().out
    for name in quant.available() + quant.available_estimators():
        assert name in out
    assert "arXiv 1602.02830" in out


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "quantizers" in capsys.readouterr().out


def test_console_script_runs():
    result = subprocess.run([sys.executable, "-m", "qnnlab.cli", "quantizers"], capture_output=True, text=True)
    assert result.returncode == 0 and "dorefa" in result.stdout


def test_recipes_and_models_listings(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    assert "bnn-shift" in out and "clip_latent" in out and "[epochs]" in out
    assert main(["recipes", "bnn"]) == 0
    assert "clip_latent: 1.0" in capsys.readouterr().out
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "vgg-cifar" in out and "fashion-mnist-mini" in out and "imagefolder" in out
