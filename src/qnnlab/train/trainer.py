"""The training loop: one recipe config -> a run folder with config, checkpoint and metrics.

``DIR/config.yaml`` the resolved config; ``DIR/checkpoint.safetensors`` written atomically after
every epoch; ``DIR/metrics.jsonl`` one JSON object per epoch. A killed run resumed with
``resume=True`` ends with the same weights and metrics as an uninterrupted one: batch order and
every random draw of epoch e are seeded by (seed, e, rank).
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
import torch.nn.functional as F
import yaml
from torch import nn

from qnnlab import data as datasets
from qnnlab import models, quant
from qnnlab.nn import SquaredHingeLoss
from qnnlab.optim import build_optimizer, build_schedule
from qnnlab.optim.rules import add_latent_rounding, quantized_weights
from qnnlab.train import checkpoint
from qnnlab.train.batches import image_batches, lm_batches, model_layout
from qnnlab.train.config import TrainConfig, from_dict
from qnnlab.train.distributed import Distributed
from qnnlab.train.ebp import EBPNetwork
from qnnlab.train.evaluate import evaluate_images, evaluate_text, parse_mode
from qnnlab.train.memory import keep_freed_memory

CHECKPOINT = "checkpoint.safetensors"
RUN_ENVIRONMENT = ("device", "threads", "data_root")  # where a run trains, not what it trains
METRICS = "metrics.jsonl"


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the step and the likely cause."""


class RunExists(ValueError):
    """The output folder already holds a run that --resume was not asked to continue."""


def build_model(config: TrainConfig, data: datasets.ImageData | datasets.TextData) -> nn.Module:
    if config.algorithm == "ebp":
        return _ebp_network(config, data)
    if config.algorithm != "backprop":
        raise ValueError(f"algorithm={config.algorithm!r}; use backprop or ebp")
    common = dict(norm=config.norm, activation=config.activation, output_norm=config.output_norm,
                  rules=config.rules, **config.model_options)
    if isinstance(data, datasets.TextData):
        return models.build(config.model, vocab=data.vocab_size, rules=config.rules, **config.model_options)
    return models.build(config.model, shape=data.shape, classes=data.classes, **common)


def initial_model(config: TrainConfig, data: datasets.ImageData | datasets.TextData) -> nn.Module:
    """The model as training starts, drawn from ``config.seed``: a run's config redraws it."""
    torch.manual_seed(config.seed)
    return build_model(config, data)


def _ebp_network(config: TrainConfig, data: datasets.ImageData | datasets.TextData) -> nn.Module:
    if isinstance(data, datasets.TextData) or config.model not in models.VISION or \
            models.VISION[config.model][0] is not models.mlp:
        raise ValueError(f"algorithm=ebp trains binary-weight MLPs on images; model {config.model!r} is not one")
    widths = config.model_options.get("widths", models.VISION[config.model][1]["widths"])
    return EBPNetwork([math.prod(data.shape), *widths, data.classes])


def _lock_run_folder(out: Path):  # type: ignore[no-untyped-def]
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


def build_training_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer ``config`` trains ``model`` with, latent-weight clipping and rounding included."""
    optimizer = build_optimizer(model, config.optimizer, config.lr, config.momentum, config.weight_decay,
                                tuple(config.betas), config.lr_scale, config.clip_latent, config.bop_gamma,
                                config.bop_threshold)
    if config.latent_quantizer:
        add_latent_rounding(optimizer, [p for _, _, p in quantized_weights(model)], config.latent_quantizer)
    return optimizer


def _check(config: TrainConfig) -> None:
    parse_mode(config.eval_mode)
    if config.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={config.device!r} but torch sees no CUDA device here; use --device cpu")
    if not config.device.startswith(("cpu", "cuda")):
        raise ValueError(f"device={config.device!r}; use cpu or cuda (cuda:N)")
    if config.loss not in ("cross_entropy", "squared_hinge"):
        raise ValueError(f"loss={config.loss!r}; use cross_entropy or squared_hinge")
    if config.augment not in ("none", "flip"):
        raise ValueError(f"augment={config.augment!r}; use none or flip")


class Trainer:
    def __init__(self, config: TrainConfig, out: str | os.PathLike, resume: bool = False, quiet: bool = False,
                 environment: dict[str, Any] | None = None) -> None:
        """A resumed run trains what its checkpoint's config says; ``environment`` (some of
        ``RUN_ENVIRONMENT``: device, threads, data_root) says where it runs now, e.g. a CPU run
        continued on a GPU machine."""
        environment = dict(environment or {})
        if set(environment) - set(RUN_ENVIRONMENT):
            raise ValueError(f"environment keys {sorted(set(environment) - set(RUN_ENVIRONMENT))} are not "
                             f"where-to-run settings; use {', '.join(RUN_ENVIRONMENT)}")
        self.out = Path(out)
        saved = None
        if (self.out / CHECKPOINT).exists():  # --resume with no checkpoint yet simply starts the run
            if not resume:
                raise RunExists(f"{self.out} already holds a run; pass --resume to continue it, or choose "
                                f"another --out")
            saved = checkpoint.load(self.out / CHECKPOINT)
            config = from_dict(saved[2]["config"], source=str(self.out / CHECKPOINT))
        config = dataclasses.replace(config, **environment)
        _check(config)
        self.dist = Distributed.from_environment(config.device)
        if self.dist.is_main:
            self._lock = _lock_run_folder(self.out)
        if config.threads:
            torch.set_num_threads(config.threads)
        keep_freed_memory()
        self.quiet = quiet or not self.dist.is_main
        self.metrics: list[dict[str, Any]] = []
        self.start_epoch = 0
        self.config = config
        self.data = datasets.load(config.dataset, config.data_root, image_size=config.image_size)
        self.is_text = isinstance(self.data, datasets.TextData)
        self.model = initial_model(config, self.data).to(config.device)
        self.steps_per_epoch = self._steps_per_epoch()
        self.ebp = isinstance(self.model, EBPNetwork)
        if self.ebp:  # Bayesian updates: no optimizer, no schedule
            self.optimizer = self.schedule = None
        else:
            self._build_optimizer(config)
        if saved is not None:
            self._restore(*saved)
        self.train_model = self.dist.wrap(self.model) if not self.ebp else self.model
        self.criterion = SquaredHingeLoss("none") if config.loss == "squared_hinge" else None
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            checkpoint.atomic_write(self.out / "config.yaml",
                                    lambda p: p.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False)))

    def _build_optimizer(self, config: TrainConfig) -> None:
        self.optimizer = build_training_optimizer(self.model, config)
        self.schedule = build_schedule(self.optimizer, config.schedule, config.epochs * self.steps_per_epoch,
                                       self.steps_per_epoch, config.final_lr_fraction)

    def _steps_per_epoch(self) -> int:
        if self.is_text:
            rows = len(self.data.train) // self.config.batch_size
            steps = max(1, math.ceil((rows - 1) / self.config.seq_len))
        else:
            steps = len(self.data.train_y) // self.config.batch_size
        if steps < 1:
            raise ValueError(f"batch_size={self.config.batch_size} is larger than the training set")
        return min(steps, self.config.limit_steps) if self.config.limit_steps > 0 else steps

    def _restore(self, model_state: dict, extra: dict, info: dict) -> None:
        self.model.load_state_dict(model_state)
        if self.optimizer is not None:
            self.optimizer.load_state_dict(extra["optimizer"])
            self.schedule.load_state_dict(extra["schedule"])
        self.start_epoch = info["epoch"] + 1
        self.metrics = info["metrics"]

    def _save(self, epoch: int) -> None:
        info = {"config": self.config.to_dict(), "epoch": epoch, "metrics": self.metrics}
        if not self.is_text:  # lets qnnlab export rebuild the model without the data set
            info["image_shape"], info["classes"] = list(self.data.shape), self.data.classes
        extra = {} if self.optimizer is None else {"optimizer": self.optimizer.state_dict(),
                                                   "schedule": self.schedule.state_dict()}
        checkpoint.save(self.out / CHECKPOINT, self.model.state_dict(), extra, info)
        lines = "".join(json.dumps(m) + "\n" for m in self.metrics)
        checkpoint.atomic_write(self.out / METRICS, lambda p: p.write_text(lines))

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-sample loss (so score-function estimators can credit each sample)."""
        if self.criterion is not None:
            return self.criterion(output, target)
        return F.cross_entropy(output, target, reduction="none")

    def run(self) -> list[dict[str, Any]]:
        for epoch in range(self.start_epoch, self.config.epochs):
            seed_epoch(self.config, epoch, self.dist.rank)
            quant.set_epoch(self.model, epoch)
            started = time.perf_counter()
            train_stats = self._train_epoch(epoch)
            record = {"epoch": epoch + 1, **train_stats}
            if self.dist.is_main:
                record.update(self._evaluate())
            record["epoch_seconds"] = round(time.perf_counter() - started, 3)
            self.metrics.append(record)
            if self.dist.is_main:
                self._save(epoch)
                if not self.quiet:
                    print(_summary(record), file=sys.stderr, flush=True)
            self.dist.barrier()
        self.dist.close()
        return self.metrics

    def _evaluate(self) -> dict[str, float]:
        if self.is_text:
            return evaluate_text(self.model, self.data, "valid", self.config.eval_mode, self.config.device)
        return evaluate_images(self.model, self.data, self.config.eval_mode, self.config.device)

    def _batches(self, epoch: int):  # type: ignore[no-untyped-def]
        if self.is_text:
            return lm_batches(self.data.train, self.config.batch_size, self.config.seq_len, self.dist.rank,
                              self.dist.world)
        return image_batches(self.data.train_x, self.data.train_y, self.config.batch_size, self.config.seed, epoch,
                             self.config.augment, self.dist.rank, self.dist.world)

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        from tqdm import tqdm

        self.model.train()
        total_loss, correct, seen, state = 0.0, 0, 0, None
        started = time.perf_counter()
        bar = tqdm(self._batches(epoch), total=self.steps_per_epoch, desc=f"epoch {epoch + 1}/{self.config.epochs}",
                   disable=self.quiet or not sys.stderr.isatty(), leave=False, unit="step")
        for step, (x, y) in enumerate(bar):
            if step >= self.steps_per_epoch:
                break
            loss, right, state = self._step(epoch, step, self._to_device(x), y.to(self.config.device), state)
            weight = 1 if self.is_text else len(y)  # text: average over steps; images: over samples
            total_loss, correct, seen = total_loss + loss * weight, correct + right, seen + weight
            if self.is_text:
                bar.set_postfix(bpc=f"{total_loss / seen / math.log(2):.3f}")
            else:
                rate = seen * self.dist.world / max(time.perf_counter() - started, 1e-9)
                bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.4f}", img_s=f"{rate:.0f}")
        stats = {"train_loss": total_loss / max(seen, 1),
                 "lr": self.optimizer.param_groups[0]["lr"] if self.optimizer else 0.0}
        if self.is_text:
            stats["train_bpc"] = stats["train_loss"] / math.log(2)
        else:
            stats["train_accuracy"] = correct / max(seen, 1)
        return self.dist.average(stats)

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        return model_layout(x.to(self.config.device), self.config.channels_last)

    def _step(self, epoch: int, step: int, x: torch.Tensor, y: torch.Tensor, state: Any) -> tuple[float, int, Any]:
        """One update; returns the mean loss, the number of correct predictions and the recurrent
        state to carry into the next window (language models)."""
        if self.ebp:
            nll, right = self.model.ebp_step(x, y)
            return nll, right, None
        if self.is_text:
            logits, state = self.train_model(x, _detached(state))
            per_sample = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none")
            right = 0
        else:
            logits = self.train_model(x)
            per_sample = self.loss(logits, y)
            right = int((logits.argmax(1) == y).sum())
        loss = per_sample.mean()
        if not torch.isfinite(loss):
            raise TrainingDiverged(self._divergence_message(epoch, step, float(loss.detach())))
        self.optimizer.zero_grad(set_to_none=True)
        (loss + quant.score_function_loss(self.model, per_sample)).backward()
        if self.config.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.schedule.step()
        return float(loss.detach()), right, state

    def _divergence_message(self, epoch: int, step: int, value: float) -> str:
        global_step = epoch * self.steps_per_epoch + step + 1
        lr = self.optimizer.param_groups[0]["lr"]
        causes = [f"the learning rate ({lr:g}) is too high for this model: lower it with --set lr=..."]
        if self.config.clip_latent is None and any(True for _ in quantized_weights(self.model)):
            causes.append("latent weights are not clipped: try --set clip_latent=1.0")
        if self.config.norm == "none":
            causes.append("there is no batch norm: activations can grow without bound")
        return (f"training diverged: loss is {value} at step {global_step} (epoch {epoch + 1}, batch {step + 1}). "
                f"Likely cause: " + "; or ".join(causes) + f". The last good checkpoint is in {self.out}.")


def _detached(state: Any) -> Any:
    """Truncated back-propagation: the state carries values, not the graph, into the next window."""
    if state is None:
        return None
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


def _summary(record: dict[str, Any]) -> str:
    return "  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items())
