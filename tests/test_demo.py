"""qnnlab demo end to end, on a tiny version of its sweep."""

import json

from qnnlab import demo
from qnnlab.bench import onnx
from qnnlab.cli import main

TINY = """base: {model: mlp, model_options: {widths: [32, 32]}, dataset: fashion-mnist-mini, epochs: 1, limit_steps: 5}
cases: {float: {recipe: float}, bnn: {recipe: bnn}, bnn-no-bn: {recipe: bnn, norm: none}}
seeds: [0]
"""


def test_the_demo_trains_measures_and_reports(tmp_path, monkeypatch, capsys):
    (tmp_path / "tiny.yaml").write_text(TINY)
    monkeypatch.setattr(demo, "SWEEP", str(tmp_path / "tiny.yaml"))
    assert main(["demo", "--out", str(tmp_path / "demo"), "--repeats", "3"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert {"recipe", "float", "bnn", "bnn-no-bn"} <= set(lines) and "x /" in lines["bnn"]
    speed = json.loads((tmp_path / "demo" / "speed.json").read_text())
    assert speed["batch1"]["packed_ms"] > 0 and speed["batch100"]["float_ms"] > 0 and speed["ratio"] > 10
    assert speed["batch100"]["int8_ms"] > 0 and "against the strongest int8 of the float model" in out
    expected = (
        {"torch-float32", "torch-int8-dynamic"}
        | ({"ort-float32", "ort-int8-static"} if onnx.available() else set())
        | ({"openvino-float32", "openvino-int8"} if onnx.available() and onnx.openvino_available() else set())
    )
    assert set(speed["batch1"]["baselines"]) == expected and speed["batch1"]["int8_baseline"] in expected
    assert "Against the strongest int8 of the float model" in (tmp_path / "demo" / "report.md").read_text()
    assert (tmp_path / "demo" / "report.html").is_file() and "report: " in out
    assert "![Latent weights by layer: float, BNN]" in (tmp_path / "demo" / "report.md").read_text()
    assert "by qnnlab demo: the packed BNN against the same MLP" in (tmp_path / "demo" / "report.md").read_text()
    assert main(["demo", "--out", str(tmp_path / "demo"), "--repeats", "3"]) == 0  # a rerun retrains nothing
