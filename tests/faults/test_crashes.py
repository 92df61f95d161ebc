"""Crashes, failed writes, divergence and races: a training run or a sweep killed at random points
(inside the checkpoint write too) resumes to the records of an uninterrupted run; a full disk or an
I/O error keeps the previous checkpoint and records and says what happened; a diverged run keeps
its last good checkpoint and resumes with a smaller learning rate; two processes on one folder do
not corrupt each other."""

import errno
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from qnnlab.cli import main
from qnnlab.run import checkpoint, resolve
from qnnlab.sweep import run_sweep
from qnnlab.sweep.records import read_plan, result, without_timing
from qnnlab.train import RunExists, Trainer, TrainingDiverged

pytestmark = pytest.mark.fault

TRAIN = [
    "train",
    "--recipe",
    "bnn",
    "--model",
    "mlp-small",
    "--dataset",
    "fashion-mnist-mini",
    "--epochs",
    "40",
    "--threads",
    "1",
    "--set",
    "limit_steps=25",
    "--set",
    "model_options={widths: [32]}",
    "--quiet",
]


def metrics(run):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "epoch_seconds"} for line in lines]


def weights(run):
    return checkpoint.load(run / "checkpoint.safetensors")[0]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run = tmp_path_factory.mktemp("whole") / "run"
    assert main([*TRAIN, "--out", str(run)]) == 0
    return run


def compare(run, reference, lost):
    """Lost or changed records: metrics lines that differ or are missing, and the final weights."""
    got, expected = metrics(run), metrics(reference)
    missing = sum(a != b for a, b in zip(got, expected)) + abs(len(got) - len(expected))
    a, b = weights(run), weights(reference)
    missing += int(a.keys() != b.keys() or not all(torch.equal(a[k], b[k]) for k in a))
    assert lost(missing) == 0
    assert not list(run.glob(".*.tmp")), "a killed writer's temporary file was left behind"


def spawn(argv, prelude=""):
    code = prelude + "\nimport sys\nfrom qnnlab.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    return subprocess.Popen(
        [sys.executable, "-c", code, *argv],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def epochs_done(run):
    try:
        return len((run / "metrics.jsonl").read_text().splitlines())
    except OSError:
        return 0


def until_done(argv, run, rng, kills=3):
    """Run, SIGKILL at a random point of training (after a random epoch, plus a random fraction of
    the next), resume; ``kills`` times, then let it finish. Returns the epochs done at each kill."""
    at = []
    for attempt in range(kills + 1):
        process = spawn([*argv, "--out", str(run), *(["--resume"] if attempt else [])])
        if attempt < kills:
            target = epochs_done(run) + rng.randint(1, 8)
            while process.poll() is None and epochs_done(run) < target:
                time.sleep(0.01)
            time.sleep(rng.uniform(0, 0.08))  # an epoch here lasts about 0.1 s: anywhere inside the next
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                at.append(epochs_done(run))
        assert process.wait(timeout=600) in (0, -signal.SIGKILL), process.stderr.read()
    assert process.returncode == 0
    return at


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_training_run_killed_at_random_points_resumes_to_the_same_records(tmp_path, uninterrupted, lost, seed):
    killed_at = until_done(TRAIN, tmp_path / "run", random.Random(seed))
    assert len(killed_at) == 3 and killed_at == sorted(killed_at)
    compare(tmp_path / "run", uninterrupted, lost)


DIE_IN_CHECKPOINT_WRITE = """
import os, signal
import qnnlab.run.checkpoint as ck
real, calls = ck.save_file, []
def half_then_die(tensors, path, metadata=None):
    calls.append(1)
    real(tensors, path, metadata=metadata)
    if len(calls) == {n}:
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
        os.kill(os.getpid(), signal.SIGKILL)
ck.save_file = half_then_die
"""
DIE_BEFORE_METRICS = """
import os, signal
from qnnlab.train import trainer
real, calls = trainer.Trainer._write_metrics, []
def die_first(self):
    calls.append(1)
    if len(calls) == {n}:
        os.kill(os.getpid(), signal.SIGKILL)
    real(self)
trainer.Trainer._write_metrics = die_first
"""


@pytest.mark.parametrize(
    "prelude",
    [DIE_IN_CHECKPOINT_WRITE.format(n=1), DIE_IN_CHECKPOINT_WRITE.format(n=3), DIE_BEFORE_METRICS.format(n=2)],
    ids=["inside the first checkpoint write", "inside the third checkpoint write", "between checkpoint and metrics"],
)
def test_a_kill_inside_a_write_loses_nothing(tmp_path, uninterrupted, lost, prelude):
    run = tmp_path / "run"
    process = spawn([*TRAIN, "--out", str(run)], textwrap.dedent(prelude))
    assert process.wait(timeout=600) == -signal.SIGKILL
    assert main([*TRAIN, "--out", str(run), "--resume"]) == 0
    compare(run, uninterrupted, lost)


SWEEP = """base: {recipe: bnn, model: mlp-small, model_options: {widths: [16]}, dataset: fashion-mnist-mini,
       epochs: 3, limit_steps: 8, threads: 1}
cases: {full: {}, no-bn: {norm: none}}
seeds: 2
"""


def sweep_records(out):
    return {
        run["name"]: (without_timing(result(out / run["name"])), metrics(out / run["name"])) for run in read_plan(out)
    }


@pytest.fixture(scope="module")
def whole_sweep(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sweep")
    (folder / "s.yaml").write_text(SWEEP)
    run_sweep(folder / "s.yaml", folder / "whole", jobs=1, progress=False)
    return folder


def sweep_epochs(out):
    return sum(epochs_done(metrics.parent) for metrics in out.glob("*/*/metrics.jsonl"))


@pytest.mark.parametrize("seed", [11, 12])
def test_a_sweep_killed_at_random_points_ends_with_the_same_records(tmp_path, whole_sweep, lost, seed):
    rng, out, kills = random.Random(seed), tmp_path / "killed", 0
    argv = ["sweep", str(whole_sweep / "s.yaml"), "--out", str(out), "--jobs", "1", "--quiet"]
    for attempt in range(4):  # three kills after a random epoch of the 12 (4 runs x 3), then to the end
        process = spawn(argv)
        if attempt < 3:
            target = sweep_epochs(out) + rng.randint(1, 3)
            while process.poll() is None and sweep_epochs(out) < target:
                time.sleep(0.01)
            time.sleep(rng.uniform(0, 0.1))
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)  # the sweep and its worker processes
                kills += 1
        assert process.wait(timeout=600) in (0, -signal.SIGKILL), process.stderr.read()
    assert process.returncode == 0 and kills >= 2
    got, expected = sweep_records(out), sweep_records(whole_sweep / "whole")
    assert lost(sum(got.get(name) != records for name, records in expected.items())) == 0


def _failing_write(monkeypatch, module, name, error, on_call):
    real, calls = getattr(module, name), []

    def fail(*args, **kwargs):
        calls.append(1)
        if len(calls) == on_call:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, fail)


def _no_space():
    from safetensors import SafetensorError

    return SafetensorError(
        'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'
    )


def _checkpoint_module():
    import qnnlab.run.checkpoint

    return qnnlab.run.checkpoint


def _path_class():
    import pathlib

    return pathlib.Path


WRITE_FAILURES = {  # where the write fails, how, the words of the message, on which call (2: epoch 2's)
    "a full disk in the checkpoint write": (_checkpoint_module, "save_file", _no_space, "No space left", 2),
    "an I/O error in the checkpoint write": (
        _checkpoint_module,
        "save_file",
        lambda: OSError(errno.EIO, "Input/output error"),
        "Input/output error",
        2,
    ),
    "a full disk in the metrics write": (  # write_text: config.yaml, then each epoch's metrics
        _path_class,
        "write_text",
        lambda: OSError(errno.ENOSPC, "No space left on device"),
        "No space left",
        3,
    ),
}


@pytest.mark.parametrize("case", WRITE_FAILURES)
def test_a_failed_write_keeps_the_previous_checkpoint_and_records(
    tmp_path, uninterrupted, lost, monkeypatch, capsys, case
):
    where, name, error, words, on_call = WRITE_FAILURES[case]
    _failing_write(monkeypatch, where(), name, error(), on_call)
    run = tmp_path / "run"
    assert main([*TRAIN, "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err and "could not be written" in err and str(run) in err
    monkeypatch.undo()
    saved = checkpoint.load(run / "checkpoint.safetensors")[2]  # epoch 1's, or epoch 2's when the metrics write failed
    assert len(metrics(run)) == 1 and [m["epoch"] for m in saved["metrics"]] == list(range(1, saved["epoch"] + 2))
    assert main([*TRAIN, "--out", str(run), "--resume"]) == 0
    compare(run, uninterrupted, lost)


def test_a_read_only_folder_is_named(tmp_path, monkeypatch, capsys):
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    assert main([*TRAIN, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Read-only file system" in err and "could not be written" in err


def test_a_failed_export_keeps_the_previous_packed_model(tmp_path, uninterrupted, monkeypatch, capsys):
    import safetensors.torch

    from qnnlab import runtime

    out = tmp_path / "m.qnn"
    assert main(["export", str(uninterrupted), str(out)]) == 0
    before = out.read_bytes()
    _failing_write(monkeypatch, safetensors.torch, "save_file", _no_space(), 1)
    monkeypatch.setattr(runtime, "save_file", safetensors.torch.save_file)
    assert main(["export", str(uninterrupted), str(out)]) == 2
    assert "previous version is kept" in capsys.readouterr().err and out.read_bytes() == before


def test_a_diverged_run_keeps_its_last_good_checkpoint_and_resumes_with_a_smaller_lr(tmp_path):
    quick = {
        "model": "mlp-small",
        "dataset": "fashion-mnist-mini",
        "epochs": 3,
        "limit_steps": 10,
        "threads": 1,
        "optimizer": "sgd",
        "norm": "none",
        "lr": 0.01,
        "schedule": "constant",
    }
    run = tmp_path / "run"
    first = Trainer(resolve("float", quick), run, quiet=True)
    save = first._save

    def stop_after_first_epoch(epoch):
        save(epoch)
        raise KeyboardInterrupt

    first._save = stop_after_first_epoch
    with pytest.raises(KeyboardInterrupt):
        first.run()
    del first
    with pytest.raises(TrainingDiverged, match=r"step \d+ \(epoch 2.*--resume --out .* --lr"):
        Trainer(resolve("float", quick), run, resume=True, quiet=True, requested={"lr": 1e12}).run()
    assert checkpoint.load(run / "checkpoint.safetensors")[2]["epoch"] == 0 and len(metrics(run)) == 1
    resumed = Trainer(resolve("float", quick), run, resume=True, quiet=True, requested={"lr": 0.005})
    done = resumed.run()
    assert [m["epoch"] for m in done] == [1, 2, 3] and all(m["test_loss"] < 10 for m in done)
    assert [m["lr"] for m in done] == [0.01, 0.005, 0.005] and resumed.config.lr == 0.005


def test_two_trainings_on_one_folder_do_not_both_train(tmp_path):
    run = tmp_path / "run"
    process = spawn([*TRAIN, "--out", str(run), "--epochs", "50"])
    try:
        for _ in range(200):
            if (run / "config.yaml").exists():
                break
            time.sleep(0.1)
        with pytest.raises(RunExists, match="another process is training"):
            Trainer(resolve("bnn", {"model": "mlp-small", "dataset": "fashion-mnist-mini"}), run, resume=True)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def test_two_sweeps_on_one_folder_train_each_run_once(tmp_path, whole_sweep, lost):
    out = tmp_path / "shared"
    both = [
        spawn(["sweep", str(whole_sweep / "s.yaml"), "--out", str(out), "--jobs", "1", "--quiet"]) for _ in range(2)
    ]
    assert all(p.wait(timeout=600) == 0 for p in both)
    got, expected = sweep_records(out), sweep_records(whole_sweep / "whole")
    assert lost(sum(got.get(name) != records for name, records in expected.items())) == 0


def test_a_loss_that_explodes_without_nan_keeps_the_good_checkpoint_and_the_best_is_kept(tmp_path, monkeypatch):
    from qnnlab.train import trainer as training

    config = resolve("bnn", {"model": "mlp-small", "dataset": "fashion-mnist-mini", "epochs": 4, "limit_steps": 5})
    run = Trainer(config, tmp_path / "run", quiet=True)
    evaluate, epochs = run.task.evaluate, []

    def worse_then_explode(model):  # epoch 2 scores at chance, epoch 3's loss is finite but absurd
        epochs.append(1)
        record = evaluate(model)
        return {**record, **({2: {"test_accuracy": 0.1}, 3: {"test_loss": 1e18}}.get(len(epochs), {}))}

    monkeypatch.setattr(run.task, "evaluate", worse_then_explode)
    with pytest.raises(TrainingDiverged, match="epoch 3: test_loss not finite or beyond"):
        run.run()
    assert checkpoint.load(tmp_path / "run" / "checkpoint.safetensors")[2]["epoch"] == 1
    assert checkpoint.load(tmp_path / "run" / training.BEST)[2]["epoch"] == 0  # epoch 1 scored best
