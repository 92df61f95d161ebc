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


QUICK_RUN = ["--model", "mlp-small", "--dataset", "fashion-mnist-mini", "--set", "limit_steps=3", "--quiet"]


def test_resume_with_another_epoch_count_is_refused_not_ignored(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["train", "--recipe", "bnn", "--epochs", "1", "--out", out, *QUICK_RUN]) == 0
    assert main(["train", "--out", out, "--resume", "--epochs", "3", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "was trained with epochs=1 (asked 3)" in err and "another --out" in err
    assert main(["train", "--out", out, "--resume", "--threads", "1", "--quiet"]) == 0  # where it runs may change


def test_analyze_reads_a_run_folder_and_takes_data_root(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["train", "--recipe", "bnn", "--epochs", "1", "--out", out, *QUICK_RUN]) == 0
    capsys.readouterr()
    assert main(["analyze", "--checkpoint", out, "--batch", "2"]) == 0
    assert "bnn mlp-small, batch 2, inference" in capsys.readouterr().out
    assert main(["analyze", "--recipe", "bnn", "--dataset", "fashion-mnist-mini", "--data-root", str(tmp_path)]) == 0
    assert main(["analyze", "--checkpoint", out, "--recipe", "float"]) == 2
    assert "drop --recipe" in capsys.readouterr().err
    assert main(["analyze", "--checkpoint", str(tmp_path / "nothing")]) == 2
    assert main(["analyze", "--batch", "0"]) == 2
