"""The trainer: run folder contents, exact resume, divergence, evaluation modes, checkpoints."""

import copy
import json
import os
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from qnnlab.cli import main
from qnnlab.run import checkpoint
from qnnlab.run.evaluate import evaluate_checkpoint
from qnnlab.train import RunExists, Trainer, TrainingDiverged, resolve

from conftest import needs_shakespeare, shakespeare_root

QUICK = {"model": "mlp-small", "dataset": "fashion-mnist-mini", "epochs": 2, "limit_steps": 20, "threads": 1}


def train(tmp_path, recipe="bnn", name="run", **overrides):
    config = resolve(recipe, {**QUICK, **overrides})
    trainer = Trainer(config, tmp_path / name, quiet=True)
    return trainer, trainer.run()


def test_run_folder_holds_config_checkpoint_and_metrics(tmp_path):
    _, metrics = train(tmp_path)
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lines == metrics and [m["epoch"] for m in lines] == [1, 2]
    assert {"epoch", "train_loss", "test_accuracy"} <= set(lines[0])
    assert lines[-1]["test_accuracy"] > 0.5  # 40 steps of a binary MLP already beat chance (0.1)
    assert "rules" in (tmp_path / "run" / "config.yaml").read_text()
    assert any(k.startswith("model/") for k in load_file(str(tmp_path / "run" / "checkpoint.safetensors")))


def test_resume_reaches_the_same_result_as_an_uninterrupted_run(tmp_path, monkeypatch):
    whole, _ = train(tmp_path, "binaryconnect-stochastic", "whole", epochs=3)
    config = resolve("binaryconnect-stochastic", {**QUICK, "epochs": 3})
    save = Trainer._save

    def save_then_die(self, epoch):
        save(self, epoch)
        if epoch == 1:
            raise KeyboardInterrupt  # killed right after the checkpoint of epoch 2

    monkeypatch.setattr(Trainer, "_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        Trainer(config, tmp_path / "killed", quiet=True).run()
    monkeypatch.setattr(Trainer, "_save", save)
    with pytest.raises(RunExists, match="--resume"):
        Trainer(config, tmp_path / "killed")
    resumed = Trainer(config, tmp_path / "killed", resume=True, quiet=True)
    assert resumed.start_epoch == 2
    resumed.run()
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    drop_time = lambda ms: [{k: v for k, v in m.items() if k != "epoch_seconds"} for m in ms]  # noqa: E731
    assert drop_time(whole.metrics) == drop_time(resumed.metrics)
    saved = [json.loads(line) for line in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert drop_time(saved) == drop_time(whole.metrics)


def test_divergence_names_the_step_and_cause(tmp_path):
    with pytest.raises(TrainingDiverged, match=r"step \d+ \(epoch 1, batch \d+\).*learning rate"):
        train(tmp_path, "float", lr=1e12, optimizer="sgd", norm="none")


@pytest.mark.parametrize(
    "recipe, mode",
    [("binaryconnect", "binary"), ("binaryconnect-stochastic", "latent"), ("binaryconnect-stochastic", "ensemble:3")],
)
def test_evaluation_modes(tmp_path, recipe, mode):
    train(tmp_path, recipe, limit_steps=50)
    result = evaluate_checkpoint(str(tmp_path / "run"), mode)
    assert result["mode"] == mode and 0.15 < result["test_accuracy"] <= 1.0  # chance is 0.1 after 100 steps


def test_binary_mode_uses_deterministic_weights(tmp_path):
    trainer, _ = train(tmp_path, "binaryconnect-stochastic")
    first = evaluate_checkpoint(str(tmp_path / "run"), "binary")
    assert evaluate_checkpoint(str(tmp_path / "run"), "binary") == first
    deterministic_run = tmp_path / "det"
    train(tmp_path, "binaryconnect", "det")
    binary = evaluate_checkpoint(str(deterministic_run), "binary")
    ensemble = evaluate_checkpoint(str(deterministic_run), "ensemble:4")  # nothing to sample: same network
    assert binary["test_accuracy"] == ensemble["test_accuracy"]
    with pytest.raises(ValueError, match="ensemble:N"):
        evaluate_checkpoint(str(tmp_path / "run"), "ensemble:0")


def test_sampled_evaluation_is_reproducible_from_its_seed(tmp_path):
    train(tmp_path, "binaryconnect-stochastic", limit_steps=50)
    run = str(tmp_path / "run")
    seeded = [evaluate_checkpoint(run, "ensemble:1", seed=s)["test_loss"] for s in (0, 0, 1)]
    assert seeded[0] == seeded[1] != seeded[2]


def test_broken_checkpoints_are_rejected_clearly(tmp_path):
    train(tmp_path, epochs=1)
    path = tmp_path / "run" / "checkpoint.safetensors"
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        checkpoint.load(tmp_path / "cut.safetensors")
    state, extra, info = checkpoint.load(path)
    checkpoint.save(tmp_path / "new.safetensors", state, extra, info)
    raw = (tmp_path / "new.safetensors").read_bytes().replace(b'"version":"1"', b'"version":"9"')
    (tmp_path / "newer.safetensors").write_bytes(raw)
    with pytest.raises(ValueError, match="upgrade qnnlab"):
        checkpoint.load(tmp_path / "newer.safetensors")


def test_cli_train_and_eval(tmp_path, capsys):
    out = tmp_path / "cli"
    assert (
        main(
            [
                "train",
                "--recipe",
                "bnn",
                "--model",
                "mlp-small",
                "--epochs",
                "1",
                "--set",
                "limit_steps=10",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["out"] == str(out)
    assert main(["eval", str(out), "--mode", "latent"]) == 0
    assert json.loads(capsys.readouterr().out)["mode"] == "latent"
    assert main(["train", "--recipe", "bnn", "--out", str(out)]) == 2  # exists, no --resume
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--recipe", "bnn", "--set", "lrate=1"]) == 2
    assert main(["eval", str(tmp_path / "none"), "--mode", "binary"]) == 2


@needs_shakespeare
def test_language_model_reports_bits_per_character(tmp_path):
    _, metrics = train(
        tmp_path,
        "float",
        model="lstm-lm",
        dataset="tinyshakespeare",
        data_root=shakespeare_root(),
        batch_size=16,
        seq_len=20,
        limit_steps=15,
        epochs=1,
        model_options={"hidden": 32, "embed": 16, "layers": 1},
        rules=[{"match": "LSTM", "weight": "int:bits=4", "state": "int:bits=4"}],
    )
    assert {"val_bpc", "train_bpc"} <= set(metrics[0]) and 2.0 < metrics[0]["val_bpc"] < 7.0


def _train_with_torchrun(out):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += ["-m", "qnnlab.cli", "train", "--recipe", "bnn", "--model", "mlp-small", "--epochs", "1"]
    command += ["--set", "limit_steps=10", "--out", str(out), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def _ranks_own_messages(stderr):
    """What the ranks printed, before torchrun's own report of the failure (which is all a tail shows)."""
    return stderr.split("ChildFailedError")[0][-3000:]


@pytest.mark.skipif(sys.platform != "linux", reason="torchrun with gloo is tested on Linux")
def test_data_parallel_training_with_two_processes(tmp_path):
    out = tmp_path / "ddp"
    result = _train_with_torchrun(out)
    if result.returncode != 0 and "(SIGABRT)" in result.stderr:
        # a rank aborted, in one CI run and in none of 53 tries on a dev machine; gloo's TCP transport has aborts
        # of that kind on connection races (e.g. pytorch/pytorch#188266): one fresh try, and what the
        # ranks printed goes into the test's warnings so the cause can be read
        printed = _ranks_own_messages(result.stderr)
        warnings.warn(f"a torchrun rank aborted, tried again; the ranks printed: {printed}", stacklevel=1)
        out = tmp_path / "ddp-again"
        result = _train_with_torchrun(out)
    assert result.returncode == 0, _ranks_own_messages(result.stderr)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 1 and metrics[0]["test_accuracy"] > 0.3


def test_unavailable_device_is_named(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="no CUDA device"):
        Trainer(resolve("float", {**QUICK, "device": "cuda"}), tmp_path / "gpu")
    with pytest.raises(ValueError, match="use cpu or cuda"):
        Trainer(resolve("float", {**QUICK, "device": "tpu"}), tmp_path / "tpu")


def test_modes_leave_float_models_alone(tmp_path):
    from qnnlab.run.evaluate import weight_mode

    trainer, _ = train(tmp_path, "float", epochs=1, limit_steps=5)
    for mode in ("binary", "latent", "ensemble:2"):
        with weight_mode(trainer.model, mode) as changed:
            assert not changed  # no weights to swap, so no batch-norm re-estimation either


def test_report_tables_the_runs(tmp_path, capsys):
    train(tmp_path, "bnn", "runs/bnn-small", epochs=2, limit_steps=5)
    (tmp_path / "runs" / "empty").mkdir()
    assert main(["report", str(tmp_path / "runs")]) == 0
    table = capsys.readouterr().out
    assert "| bnn-small | bnn | mlp-small | fashion-mnist-mini | 2/2 |" in table
    assert main(["report", str(tmp_path / "none")]) == 2


def test_channels_last_layout_changes_rounding_only(tmp_path):
    trainer = Trainer(resolve("float", {**QUICK, "model": "cnn"}), tmp_path / "cnn", quiet=True)  # no sign to flip
    x, labels = next(trainer.task.batches(epoch=0, rank=0, world=1))  # as the trainer lays a batch out
    batch = x.contiguous()
    assert x.is_contiguous(memory_format=torch.channels_last)
    exact = copy.deepcopy(trainer.model).double()
    F.cross_entropy(exact(batch.double()), labels).backward()
    F.cross_entropy(trainer.model(x), labels).backward()
    for (name, p), (_, q) in zip(trainer.model.named_parameters(), exact.named_parameters()):
        # float32 rounding can flip a max-pool or ReLU decision here and there: compare whole tensors
        assert (p.grad - q.grad).norm() <= 1e-2 * q.grad.norm() + 1e-8, name


def test_resume_takes_where_to_run_from_the_caller_and_the_rest_from_the_checkpoint(tmp_path):
    train(tmp_path, "bnn", epochs=1, limit_steps=3)
    other = resolve("float", {**QUICK, "epochs": 2, "threads": 1})
    resumed = Trainer(other, tmp_path / "run", resume=True, quiet=True, environment={"threads": 2})
    assert resumed.config.recipe == "bnn" and resumed.config.epochs == 1 and resumed.config.threads == 2
    assert torch.get_num_threads() == 2
    with pytest.raises(ValueError, match="where-to-run"):
        Trainer(other, tmp_path / "run", resume=True, environment={"lr": 1.0})


def test_a_kill_between_the_last_checkpoint_and_its_metrics_line_loses_no_line(tmp_path):
    metrics = train(tmp_path, "bnn", epochs=2, limit_steps=3)[1]  # the trainer (and its lock) is let go
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    (tmp_path / "run" / "metrics.jsonl").write_text(lines[0] + "\n")  # as if killed before the last write
    resumed = Trainer(
        resolve("bnn", {**QUICK, "epochs": 2, "limit_steps": 3}), tmp_path / "run", resume=True, quiet=True
    )
    assert resumed.run() == metrics
    assert (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() == lines


def test_a_run_starts_from_a_trained_float_model(tmp_path):
    from qnnlab import data
    from qnnlab.run.model import initial_model

    float_trainer, _ = train(tmp_path, "float", "float", epochs=1, limit_steps=5)
    trained = {k: v.clone() for k, v in float_trainer.model.state_dict().items()}
    del float_trainer
    config = resolve("bnn", {**QUICK, "init_from": str(tmp_path / "float")})
    model = initial_model(config, data.load("fashion-mnist-mini"))
    state = model.state_dict()
    shared = [k for k in trained if k in state]
    assert any(k.endswith("running_mean") for k in shared)  # batch-norm statistics travel too
    assert all(torch.equal(state[k], trained[k]) for k in shared)
    assert any(k not in trained for k in state)  # the BNN's output batch norm keeps its initial values
    with pytest.raises(ValueError, match="no checkpoint there"):
        initial_model(
            resolve("bnn", {**QUICK, "init_from": str(tmp_path / "nowhere")}), data.load("fashion-mnist-mini")
        )
    wide = resolve("bnn", {**QUICK, "init_from": str(tmp_path / "float"), "model_options": {"widths": [64, 64]}})
    with pytest.raises(ValueError, match="tensors of other shapes"):
        initial_model(wide, data.load("fashion-mnist-mini"))


def test_a_run_learns_from_a_trained_teacher(tmp_path):
    """Knowledge distillation: the loss mixes the task loss with T^2 KL against a frozen teacher."""
    import torch.nn.functional as F

    from qnnlab.train.tasks import task_for

    teacher_metrics = train(tmp_path, "float", "teacher", epochs=1)[1]
    config = resolve(
        "bnn", {**QUICK, "distill_from": str(tmp_path / "teacher"), "distill_weight": 0.7, "distill_temperature": 2.0}
    )
    trainer = Trainer(config, tmp_path / "student", quiet=True)
    x, y = next(trainer.task.batches(0, 0, 1))
    loss, _, _ = trainer.task.forward(trainer.model, x, y, None)
    with torch.no_grad():
        student, teacher = trainer.model(x), trainer.task.teacher(x)
    kd = F.kl_div(F.log_softmax(student / 2, 1), F.log_softmax(teacher / 2, 1), reduction="none", log_target=True)
    expected = 0.3 * F.cross_entropy(student, y, reduction="none") + 0.7 * 4 * kd.sum(1)
    torch.testing.assert_close(loss.detach(), expected, atol=1e-5, rtol=1e-4)
    assert not any(p.requires_grad for p in trainer.task.teacher.parameters())
    assert trainer.run()[-1]["test_accuracy"] > 0.3 and teacher_metrics
    with pytest.raises(ValueError, match="distill_weight=1.5"):
        resolve("bnn", {"distill_weight": 1.5})
    other = resolve("float", {**QUICK, "distill_from": str(tmp_path / "teacher")})
    from qnnlab.data import ImageData

    image, label = torch.zeros(1, 3, 32, 32, dtype=torch.uint8), torch.zeros(1, dtype=torch.long)
    with pytest.raises(ValueError, match="the teacher was trained on"):
        task_for(other, ImageData("colour", image, label, image, label, 10))
