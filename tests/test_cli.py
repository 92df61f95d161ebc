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
