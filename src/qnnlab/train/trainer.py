"""The training loop: one recipe config -> a run folder with config, checkpoint and metrics.

``DIR/config.yaml`` the resolved config; ``DIR/checkpoint.safetensors`` written atomically after
every epoch, and copied to ``DIR/best.safetensors`` when the epoch scores best so far;
``DIR/metrics.jsonl`` one JSON object per epoch. A killed run resumed with
``resume=True`` ends with the same weights and metrics as an uninterrupted one: batch order and
every random draw of epoch e are seeded by (seed, e, rank).

The loop knows neither the task (``tasks``: images or text) nor the update rule (``updates``:
back-propagation or EBP); the run's model comes from ``qnnlab.run``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from qnnlab import data as datasets
from qnnlab import quant
from qnnlab.optim.rules import quantized_weights
from qnnlab.run import checkpoint
from qnnlab.run.config import TrainConfig, from_dict
from qnnlab.run.evaluate import parse_mode
from qnnlab.run.model import CHECKPOINT, METRICS, initial_model
from qnnlab.storage import atomic_write, remove_stale_temporaries
from qnnlab.train import probe
from qnnlab.train.distributed import Distributed
from qnnlab.train.memory import keep_freed_memory
from qnnlab.train.tasks import task_for
from qnnlab.train.updates import Diverged, update_rule_for

BEST = "best.safetensors"
EXPLODED = 1e6  # a loss beyond this has diverged even where it is still finite
RUN_ENVIRONMENT = ("device", "threads", "data_root")  # where a run trains, not what it trains
RESUME_CHANGES = ("lr",)  # a diverged run resumes from its last good checkpoint with a smaller learning rate


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the step and the likely cause."""


class RunExists(ValueError):
    """The output folder already holds a run that --resume was not asked to continue."""


def _lock_run_folder(out: Path):
    """Hold an exclusive lock on ``out/.lock`` while training, so two processes never write one run."""
    import fcntl

    out.mkdir(parents=True, exist_ok=True)
    handle = open(out / ".lock", "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise RunExists(f"another process is training in {out}; wait for it or choose another --out") from None
    return handle


def seed_epoch(config: TrainConfig, epoch: int, rank: int) -> None:
    torch.manual_seed(config.seed * 1_000_003 + epoch * 1009 + rank * 7 + 1)


def _check(config: TrainConfig) -> None:
    parse_mode(config.eval_mode)
    if config.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={config.device!r} but torch sees no CUDA device here; use --device cpu")
    if not config.device.startswith(("cpu", "cuda")):
        raise ValueError(f"device={config.device!r}; use cpu or cuda (cuda:N)")


class Trainer:
    def __init__(
        self,
        config: TrainConfig,
        out: str | os.PathLike,
        resume: bool = False,
        quiet: bool = False,
        environment: dict[str, Any] | None = None,
        requested: dict[str, Any] | None = None,
    ) -> None:
        """A resumed run trains what its checkpoint's config says; ``environment`` (some of
        ``RUN_ENVIRONMENT``: device, threads, data_root) says where it runs now, e.g. a CPU run
        continued on a GPU machine. ``requested``: the fields the user set explicitly; resuming a
        run whose saved config differs in one of them is refused (the run would silently ignore it)."""
        environment = dict(environment or {})
        if set(environment) - set(RUN_ENVIRONMENT):
            raise ValueError(
                f"environment keys {sorted(set(environment) - set(RUN_ENVIRONMENT))} are not "
                f"where-to-run settings; use {', '.join(RUN_ENVIRONMENT)}"
            )
        self.out = Path(out)
        saved = None
        if (self.out / CHECKPOINT).exists():  # --resume with no checkpoint yet simply starts the run
            if not resume:
                raise RunExists(
                    f"{self.out} already holds a run; pass --resume to continue it, or choose another --out"
                )
            saved = checkpoint.load(self.out / CHECKPOINT)
            config = from_dict(saved[2]["config"], source=str(self.out / CHECKPOINT))
            _refuse_changes(self.out, config, requested or {})
            lr_factor = (requested or {}).get("lr", config.lr) / config.lr
            config = dataclasses.replace(config, lr=config.lr * lr_factor)
        config = dataclasses.replace(config, **environment)
        _check(config)
        self.dist = Distributed.from_environment(config.device)
        if config.threads:
            torch.set_num_threads(config.threads)
        keep_freed_memory()
        self.quiet = quiet or not self.dist.is_main
        self.metrics: list[dict[str, Any]] = []
        self.start_epoch = 0
        self.config = config
        self.data = datasets.load(config.dataset, config.data_root, image_size=config.image_size)
        self.task = task_for(config, self.data)
        self.model = initial_model(config, self.data).to(config.device)
        self.steps_per_epoch = self._steps_per_epoch()
        self.update = update_rule_for(self.model, config, self.steps_per_epoch, self.dist.wrap)
        if saved is None and not config.allow_degenerate:
            probe.check(self.model, self.task, next(self.task.batches(0, self.dist.rank, self.dist.world)))
        # the folder is made and locked only now, when everything the run needs has been checked
        self._lock = _lock_run_folder(self.out) if self.dist.is_main else None
        if self.dist.is_main:
            remove_stale_temporaries(self.out)
        if saved is not None:
            self._restore(*saved)
            if lr_factor != 1:
                self.update.scale_lr(lr_factor)
        if self.dist.is_main:
            atomic_write(
                self.out / "config.yaml", lambda p: p.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
            )

    def _steps_per_epoch(self) -> int:
        steps = self.task.steps_per_epoch()
        if steps < 1:
            raise ValueError(f"batch_size={self.config.batch_size} is larger than the training set")
        return min(steps, self.config.limit_steps) if self.config.limit_steps > 0 else steps

    def _restore(self, model_state: dict, extra: dict, info: dict) -> None:
        self.model.load_state_dict(model_state)
        self.update.load_state_dict(extra)
        self.start_epoch = info["epoch"] + 1
        self.metrics = info["metrics"]
        if self.dist.is_main:  # a kill between the checkpoint and the metrics file left the file behind
            self._write_metrics()

    def _save(self, epoch: int) -> None:
        """The epoch's checkpoint, a copy of it as ``best.safetensors`` when its score is the best so
        far (so a run that falls apart later keeps its best model), then the metrics file."""
        info = {"config": self.config.to_dict(), "epoch": epoch, "metrics": self.metrics, **self.task.checkpoint_info()}
        checkpoint.save(self.out / CHECKPOINT, self.model.state_dict(), self.update.state_dict(), info)
        scores = [self.task.score(m) for m in self.metrics]
        if scores[-1] >= max(scores):
            data = (self.out / CHECKPOINT).read_bytes()
            atomic_write(self.out / BEST, lambda p: p.write_bytes(data))
        self._write_metrics()

    def _write_metrics(self) -> None:
        lines = "".join(json.dumps(m) + "\n" for m in self.metrics)
        atomic_write(self.out / METRICS, lambda p: p.write_text(lines))

    def run(self) -> list[dict[str, Any]]:
        """Train the remaining epochs; the run folder's lock is let go when it ends, however it ends."""
        try:
            return self._run()
        finally:
            if self._lock is not None:
                self._lock.close()
                self._lock = None

    def _run(self) -> list[dict[str, Any]]:
        for epoch in range(self.start_epoch, self.config.epochs):
            seed_epoch(self.config, epoch, self.dist.rank)
            quant.set_epoch(self.model, epoch)
            started = time.perf_counter()
            record = {"epoch": epoch + 1, **self._train_epoch(epoch)}
            if self.dist.is_main:
                record.update(self.task.evaluate(self.model))
            record["epoch_seconds"] = round(time.perf_counter() - started, 3)
            broken = sorted(k for k, v in record.items() if isinstance(v, float) and not _sane(k, v))
            if broken:  # diverged in the epoch's last updates: keep the last good checkpoint, not this one
                raise TrainingDiverged(
                    f"training diverged in epoch {epoch + 1}: {', '.join(broken)} not finite or beyond "
                    f"{EXPLODED:g} after its last updates. "
                    f"Likely cause: {self._causes()}. The checkpoint of epoch {epoch} in {self.out} is kept."
                )
            self.metrics.append(record)
            if self.dist.is_main:
                self._save(epoch)
                if not self.quiet:
                    print(_summary(record), file=sys.stderr, flush=True)
            self.dist.barrier()
        self.dist.close()
        return self.metrics

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        from tqdm import tqdm

        self.model.train()
        total_loss, correct, seen, state = 0.0, 0, 0, None
        started = time.perf_counter()
        bar = tqdm(
            self.task.batches(epoch, self.dist.rank, self.dist.world),
            total=self.steps_per_epoch,
            desc=f"epoch {epoch + 1}/{self.config.epochs}",
            disable=self.quiet or not sys.stderr.isatty(),
            leave=False,
            unit="step",
        )
        for step, (x, y) in enumerate(bar):
            if step >= self.steps_per_epoch:
                break
            try:
                loss, right, state = self.update.step(self.task, x, y, state)
            except Diverged as diverged:
                raise TrainingDiverged(self._divergence_message(epoch, step, diverged.value)) from None
            weight = self.task.weight(y)
            total_loss, correct, seen = total_loss + loss * weight, correct + right, seen + weight
            rate = len(y) * (step + 1) * self.dist.world / max(time.perf_counter() - started, 1e-9)
            bar.set_postfix(self.task.progress(total_loss / seen, correct / seen, rate))
        mean_loss = total_loss / max(seen, 1)
        stats = {
            "train_loss": mean_loss,
            "lr": self.update.lr,
            **self.task.epoch_stats(mean_loss, correct / max(seen, 1)),
        }
        return self.dist.average(stats)

    def _divergence_message(self, epoch: int, step: int, value: float) -> str:
        global_step = epoch * self.steps_per_epoch + step + 1
        return (
            f"training diverged: loss is {value} at step {global_step} (epoch {epoch + 1}, batch {step + 1}). "
            f"Likely cause: {self._causes()}. The last good checkpoint is in {self.out}: continue from it "
            f"with qnnlab train --resume --out {self.out} --lr {self.update.lr / 10:g}"
        )

    def _causes(self) -> str:
        causes = [f"the learning rate ({self.update.lr:g}) is too high for this model: lower it with --set lr=..."]
        if self.config.clip_latent is None and any(True for _ in quantized_weights(self.model)):
            causes.append("latent weights are not clipped: try --set clip_latent=1.0")
        if self.config.norm == "none":
            causes.append("there is no batch norm: activations can grow without bound")
        return "; or ".join(causes)


def _sane(key: str, value: float) -> bool:
    return math.isfinite(value) and not (key.endswith("loss") and abs(value) > EXPLODED)


def _refuse_changes(out: Path, saved: TrainConfig, requested: dict[str, Any]) -> None:
    kept = RUN_ENVIRONMENT + RESUME_CHANGES
    changed = {k: v for k, v in requested.items() if k not in kept and getattr(saved, k, v) != v}
    if changed:
        fields = ", ".join(f"{k}={getattr(saved, k)!r} (asked {v!r})" for k, v in changed.items())
        raise ValueError(
            f"{out} was trained with {fields}; --resume continues a run as it was configured (its "
            f"learning-rate schedule spans its epochs). Train a new run with another --out to change "
            f"it; --device, --threads and --data-root may change on resume, and --lr (the schedule scaled)"
        )


def _summary(record: dict[str, Any]) -> str:
    return "  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items())
