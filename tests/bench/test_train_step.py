"""The train-step benchmark reports paired timings and an attribution by category."""

import pytest

from qnnlab.bench import train_step
from qnnlab.timing import paired_ms


def test_paired_timing_ratio(monkeypatch):
    """On a clock the calls advance (sleeps jitter on a shared host): baseline first in each pair,
    medians of each side and of the per-pair ratios."""
    from qnnlab import timing

    clock = [0.0]
    monkeypatch.setattr(timing.time, "perf_counter", lambda: clock[0])
    costs = iter([0.002, 0.004, 0.002, 0.008, 0.006, 0.004])  # (baseline, candidate) per pair, no warm-up

    def call():
        clock[0] += next(costs)

    cand, base, speedup = paired_ms(call, call, repeats=3, warmup=0)
    assert (cand, base, speedup) == pytest.approx((4, 2, 0.5))


def test_bench_train_step_names_the_cpu_and_threads(capsys):
    import json

    from qnnlab.cli import main

    assert (
        main(
            [
                "bench",
                "train-step",
                "--recipes",
                "bnn",
                "--model",
                "mlp-small",
                "--batch",
                "8",
                "--repeats",
                "1",
                "--json",
            ]
        )
        == 0
    )
    row = json.loads(capsys.readouterr().out.splitlines()[0])
    assert row["cpu"] and row["threads"] >= 1 and row["name"] == "train-step/bnn"


def test_train_step_rows():
    rows = list(train_step.run(["bnn"], model="mlp-small", batch=32, repeats=2))
    row = rows[0]
    assert {"name", "shape", "qnnlab_ms", "baseline_ms", "speedup", "extra_ms_by_category"} <= set(row)
    assert row["qnnlab_ms"] > 0 and row["baseline_ms"] > 0
    assert set(row["extra_ms_by_category"]) <= {"matmul", "batchnorm", "optimizer", "quantizer", "other"}


def test_categories():
    assert train_step.categorize("aten::addmm") == "matmul"
    assert train_step.categorize("aten::native_batch_norm") == "batchnorm"
    assert train_step.categorize("aten::sign") == "quantizer"


def test_layout_rows_compare_the_same_recipe():
    row = next(train_step.run_layout(["bnn"], model="cnn", batch=8, repeats=2))
    assert row["name"] == "layout/bnn" and row["qnnlab_ms"] > 0 and row["baseline_ms"] > 0


def test_bad_sizes_are_named():
    with pytest.raises(ValueError, match="--repeats 0"):
        paired_ms(lambda: None, lambda: None, repeats=0)
    with pytest.raises(ValueError, match="--batch 0"):
        next(train_step.run_layout(["bnn"], batch=0, repeats=1))


def test_the_timed_step_is_the_trainers_step(monkeypatch):
    from qnnlab import data, quant

    calls = []
    original = quant.score_function_loss
    monkeypatch.setattr(quant, "score_function_loss", lambda *a: calls.append(a) or original(*a))
    train_step.TrainStep("bnn", "mlp-small", 8, data.load("fashion-mnist-mini"))()
    assert len(calls) == 1  # the REINFORCE term of stochastic quantizers is part of the step
