"""Running sweeps: records, resume after SIGKILL, failures recorded, two sweeps on one folder, table, Ray."""

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from qnnlab.cli import main
from qnnlab.sweep import counts, run_sweep
from qnnlab.sweep.records import read_plan, result, without_timing
from qnnlab.sweep.table import rows

TINY = """base: {recipe: bnn, model: mlp-small, model_options: {widths: [16]}, dataset: fashion-mnist-mini,
       epochs: 3, limit_steps: 6, threads: 1}
cases:
  full: {}
  no-bn: {norm: none}
seeds: 2
"""


def sweep_file(tmp_path: Path, text: str = TINY) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return path


def records(out: Path) -> dict[str, tuple]:
    """Each run's result and metrics with measured times removed."""
    found = {}
    for run in read_plan(out):
        folder = out / run["name"]
        metrics = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        found[run["name"]] = (without_timing(result(folder)), without_timing(metrics))
    return found


def cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "qnnlab.cli", "sweep", *args],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, Path]:
    """A sweep file and its finished output folder, shared by the tests that only read them."""
    folder = tmp_path_factory.mktemp("finished")
    file = sweep_file(folder)
    assert run_sweep(file, folder / "out", jobs=2, progress=False) == {"done": 4}
    return file, folder / "out"


def test_a_sweep_writes_a_record_per_run_and_a_rerun_trains_nothing(finished):
    file, out = finished
    record = result(out / "no-bn" / "seed1")
    assert record["status"] == "done" and record["labels"] == {"case": "no-bn"} and record["seed"] == 1
    assert record["config"]["norm"] == "none" and record["epochs"] == 3
    assert 0 <= record["final"]["test_accuracy"] <= record["best"]["test_accuracy"] <= 1
    assert record["costs"]["train_step_pj_per_sample"] > record["costs"]["inference_pj"] > 0
    assert record["costs"]["deployed_weight_bits"] < record["costs"]["latent_weight_bits"]
    held = json.loads((out / "no-bn" / "seed1" / "inside.json").read_text())  # histograms for the report
    assert [layer["weights"]["weight"]["quantizer"] for layer in held["layers"]] == ["sign", "sign"]
    before = {p: p.stat().st_mtime_ns for p in out.rglob("result.json")}
    assert run_sweep(file, out, jobs=1, progress=False) == {"done": 4}
    assert {p: p.stat().st_mtime_ns for p in out.rglob("result.json")} == before


def test_a_sweep_killed_at_random_points_ends_with_the_records_of_an_uninterrupted_one(tmp_path):
    file = sweep_file(tmp_path)
    run_sweep(file, tmp_path / "whole", jobs=1, progress=False)
    rng, kills = random.Random(7), 0
    for attempt in range(7):  # six tries killed at a random moment (unless done by then), then one to the end
        process = cli(str(file), "--out", str(tmp_path / "killed"), "--jobs", "1", "--quiet")
        try:
            process.wait(timeout=rng.uniform(1.0, 6.0) if attempt < 6 else 600)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the sweep and its worker processes
            process.wait()
            kills += 1
            continue
        assert process.returncode == 0, process.stderr.read()
        break
    assert kills >= 2
    assert records(tmp_path / "killed") == records(tmp_path / "whole")
    assert not list((tmp_path / "killed").rglob("claimed"))


def test_a_failing_run_is_recorded_with_its_error_and_the_others_finish(tmp_path, capsys):
    file = sweep_file(
        tmp_path,
        TINY.replace("no-bn: {norm: none}", "diverges: {recipe: float, norm: none, optimizer: sgd, lr: 1.0e+30}"),
    )
    assert main(["sweep", str(file), "--out", str(tmp_path / "out"), "--quiet"]) == 1
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == {
        "out": str(tmp_path / "out"),
        "done": 2,
        "failed": 2,
    }
    failed = result(tmp_path / "out" / "diverges" / "seed0")
    assert failed["status"] == "failed" and "TrainingDiverged" in failed["error"] and "Traceback" in failed["traceback"]
    assert main(["sweep", "status", str(tmp_path / "out")]) == 0
    assert "runs 2/4 done, 0 running, 2 failed, 0 left" in capsys.readouterr().out


def test_two_sweeps_on_one_folder_train_each_run_once(tmp_path):
    file = sweep_file(tmp_path)
    first, second = (cli(str(file), "--out", str(tmp_path / "out"), "--quiet") for _ in range(2))
    assert first.wait(timeout=300) == 0 and second.wait(timeout=300) == 0
    assert counts(tmp_path / "out") == {"done": 4}
    for folder in (tmp_path / "out").glob("*/seed*"):
        epochs = [json.loads(line)["epoch"] for line in (folder / "metrics.jsonl").read_text().splitlines()]
        assert epochs == [1, 2, 3]  # never trained twice over one another


def test_a_changed_config_under_an_existing_run_name_is_refused(finished, tmp_path):
    changed = sweep_file(tmp_path, TINY.replace("epochs: 3", "epochs: 4"))
    with pytest.raises(ValueError, match=r"already holds run full/seed0 with another config \(fields \['epochs'\]\)"):
        run_sweep(changed, finished[1], progress=False)


def test_the_table_pairs_seeds_against_the_reference(finished, capsys):
    out = finished[1]
    table = {row["configuration"]: row for row in rows(out, reference="full")}
    acc = {
        (c, s): 100 * result(out / c / f"seed{s}")["final"]["test_accuracy"] for c in ("full", "no-bn") for s in (0, 1)
    }
    diffs = [acc["no-bn", s] - acc["full", s] for s in (0, 1)]
    assert table["no-bn"]["n"] == 2 and table["no-bn"]["mean"] == pytest.approx((acc["no-bn", 0] + acc["no-bn", 1]) / 2)
    assert table["no-bn"]["diff"] == pytest.approx(sum(diffs) / 2)
    assert table["no-bn"]["diff_spread"] == pytest.approx(abs(diffs[0] - diffs[1]) / 2**0.5)
    assert main(["sweep", "table", str(out), "--reference", "full", "--csv"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "configuration,n,mean,std,diff,diff_spread"
    with pytest.raises(ValueError, match="reference 'nope' has no finished run; configurations: full, no-bn"):
        rows(out, reference="nope")


def test_the_ray_engine_runs_a_sweep_on_a_local_instance(tmp_path):
    pytest.importorskip("ray", reason="pip install 'qnnlab[ray]'")
    file = sweep_file(tmp_path, TINY.replace("seeds: 2", "seeds: 1"))
    assert run_sweep(file, tmp_path / "out", jobs=2, engine="ray", progress=False) == {"done": 2}
    assert records(tmp_path / "out").keys() == {"full/seed0", "no-bn/seed0"}


def test_engine_and_output_errors_are_clear(tmp_path, capsys):
    file = sweep_file(tmp_path)
    assert main(["sweep", str(file), "--out", str(tmp_path / "o"), "--engine", "dask"]) == 2
    assert "use one of local, ray, submitit" in capsys.readouterr().err
    assert main(["sweep", str(file)]) == 2
    assert "name the folder the runs go to" in capsys.readouterr().err
    assert main(["sweep", "status", str(tmp_path)]) == 2
    assert "holds no sweep" in capsys.readouterr().err


def test_the_submitit_engine_runs_a_sweep_with_its_local_executor(tmp_path):
    pytest.importorskip("submitit", reason="pip install 'qnnlab[submitit]'")
    file = sweep_file(tmp_path, TINY.replace("seeds: 2", "seeds: 1"))
    assert run_sweep(file, tmp_path / "out", jobs=2, engine="submitit", progress=False, cluster="local") == {"done": 2}


def test_a_run_may_start_from_another_run_of_the_sweep(tmp_path):
    file = sweep_file(
        tmp_path,
        TINY.replace("no-bn: {norm: none}", 'from-float: {init_from: "{sweep}/float/seed{seed}"}')
        .replace("full: {}", "float: {recipe: float}")
        .replace("seeds: 2", "seeds: 1"),
    )
    assert run_sweep(file, tmp_path / "out", jobs=2, progress=False) == {"done": 2}
    record = result(tmp_path / "out" / "from-float" / "seed0")
    assert record["config"]["init_from"] == f"{tmp_path / 'out'}/float/seed0"
