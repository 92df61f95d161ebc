"""bench model: the packed BNN against torch float32 and torch's dynamic int8, interleaved."""

import json

import pytest
import torch

from qnnlab import timing
from qnnlab.bench import onnx
from qnnlab.cli import main

OPENVINO = onnx.openvino_available()


def test_interleaved_timing_gives_each_baseline_its_ratio(monkeypatch):
    """On a clock the calls themselves advance (a real one jitters on a shared host): each round's
    ratio is baseline/candidate, medians over rounds, the warm-up rounds untimed."""
    clock = [0.0]
    monkeypatch.setattr(timing.time, "perf_counter", lambda: clock[0])
    costs = iter([9.0, 9.0, 9.0] * 2 + [0.002, 0.006, 0.001, 0.002, 0.012, 0.001, 0.004, 0.006, 0.001])

    def call():
        clock[0] += next(costs)

    cand, base, ratios = timing.interleaved_ms(call, {"slow": call, "fast": call}, 3, 2)
    assert cand == pytest.approx(2) and base == pytest.approx({"slow": 6, "fast": 1})
    assert ratios == pytest.approx({"slow": 3, "fast": 0.5})


def test_bench_model_names_the_strongest_baseline_and_the_cpu(capsys):
    assert main(["bench", "model", "--model", "mlp-small", "--batch", "1,8", "--repeats", "2", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["shape"] for r in rows] == ["batch 1", "batch 8"]
    for row in rows:
        expected = (
            {"torch-float32", "torch-int8-dynamic"}
            | ({"ort-float32", "ort-int8-static"} if onnx.available() else set())
            | ({"openvino-float32", "openvino-int8"} if onnx.available() and OPENVINO else set())
        )
        assert set(row["baselines"]) == expected and row["cpu"] and ("missing" in row) != onnx.available()
        assert row.get("timed_apart", []) == sorted(
            expected - {"torch-float32", "torch-int8-dynamic", "ort-float32", "ort-int8-static"}
        )
        least = min(baseline["speedup"] for baseline in row["baselines"].values())  # rounded: ties happen
        assert row["speedup"] == least == row["baselines"][row["baseline"]]["speedup"]


@pytest.mark.skipif(not onnx.available(), reason="needs the bench extra (onnxruntime, onnx)")
def test_onnx_runtime_baselines_compute_the_float_model(tmp_path):
    from qnnlab.data import ImageData
    from qnnlab.run import build_model, resolve

    torch.manual_seed(0)
    model = build_model(
        resolve("float", {"model": "cnn", "model_options": {"width": 0.25}}), ImageData.empty((1, 28, 28), 10)
    )
    x = torch.randint(0, 256, (64, 1, 28, 28)).float() / 127.5 - 1
    with torch.no_grad():
        expected = model.eval()(x)
    runs = onnx.sessions(model, x, threads=1, folder=tmp_path)
    torch.testing.assert_close(torch.from_numpy(runs["ort-float32"](x)), expected, atol=1e-4, rtol=1e-4)
    int8 = torch.from_numpy(runs["ort-int8-static"](x))
    assert (int8.argmax(1) == expected.argmax(1)).float().mean() > 0.8  # int8 of an untrained net: close, not equal
    assert (int8 - expected).abs().max() < 0.5 * expected.abs().max()
    if OPENVINO:  # the same two files in OpenVINO's CPU plugin
        outputs = onnx.openvino_outputs(tmp_path, x)
        torch.testing.assert_close(torch.from_numpy(outputs["openvino-float32"]), expected, atol=1e-4, rtol=1e-4)
        openvino_int8 = torch.from_numpy(outputs["openvino-int8"])
        assert (openvino_int8.argmax(1) == expected.argmax(1)).float().mean() > 0.8
        assert (openvino_int8 - expected).abs().max() < 0.5 * expected.abs().max()


def test_bench_model_can_time_beside_a_busy_process(capsys):
    assert main(["bench", "model", "--model", "mlp-small", "--batch", "1", "--repeats", "2", "--busy", "--json"]) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[0])
    assert row["beside_a_busy_process"] is True and row["qnnlab_ms"] > 0


@pytest.mark.parametrize("model", ["mlp-small", "cnn"])
def test_threads_1_runs_one_thread_through_every_kernel(model):
    """numba's pool, started by the first parallel kernel, resets the process's thread count; every
    kernel entry (the load's table building too) goes through kernels._pool, which keeps the
    count asked for."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "qnnlab.cli", "bench", "model", "--model", model, "--batch", "1,8"]
        + ["--threads", "1", "--repeats", "2", "--json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["threads"] for line in done.stdout.splitlines()] == [1, 1]
