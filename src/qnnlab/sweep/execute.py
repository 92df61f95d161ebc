"""Train one planned run of a sweep and write its record; what every engine calls on a worker."""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Any

import torch

from qnnlab.analysis.inside import INSIDE, inside_of_run, write_inside
from qnnlab.run.config import from_dict
from qnnlab.sweep.records import RESULT, claim, result, what_is_trained, write_json


def execute(
    run: dict[str, Any], root: str, threads: int = 0, device: str | None = None, retry_failed: bool = False
) -> dict[str, Any]:
    """Train ``run`` (a ``PlannedRun.to_dict()``) in ``root/run["name"]`` unless it is finished or
    another process holds it, resuming from its checkpoint; returns ``{"name", "status"}``.

    A run that raises is recorded as failed with its traceback, so the sweep goes on."""
    folder = Path(root) / run["name"]
    run = {**run, "config": with_places(run["config"], root, run["seed"])}
    with claim(folder) as owned:
        if not owned:
            return {"name": run["name"], "status": "elsewhere"}
        existing = result(folder)
        if existing is not None and (existing["status"] == "done" or not retry_failed):
            return {"name": run["name"], "status": existing["status"]}
        started = time.perf_counter()
        try:
            record = _train(run, folder, threads, device)
        except Exception as exc:  # noqa: BLE001 - any error of one run is that run's record
            record = {
                "status": "failed",
                "name": run["name"],
                "labels": run["labels"],
                "seed": run["seed"],
                "config": run["config"],
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(),
            }
        record["wall_seconds"] = round(time.perf_counter() - started, 3)
        write_json(folder / RESULT, record)
        return {"name": run["name"], "status": record["status"]}


RUN_PATHS = ("init_from", "distill_from")  # fields naming another run, which may be one of the sweep's


def with_places(config: dict[str, Any], root: str, seed: int) -> dict[str, Any]:
    """``init_from`` and ``distill_from`` with {sweep} (the sweep's folder) and {seed} (the run's) filled in."""
    return {
        **config,
        **{key: config[key].format(sweep=root, seed=seed) for key in RUN_PATHS if config.get(key)},
    }


def _train(run: dict[str, Any], folder: Path, threads: int, device: str | None) -> dict[str, Any]:
    from qnnlab.train.trainer import Trainer

    config = from_dict(run["config"], source=f"sweep run {run['name']}")
    if (folder / "config.yaml").is_file():
        from qnnlab.run.config import load_yaml

        saved = load_yaml((folder / "config.yaml").read_text()) or {}
        if what_is_trained(saved) != what_is_trained(config.to_dict()):
            raise ValueError(f"{folder} holds a run of another config; delete the folder to train this one")
    environment: dict[str, Any] = {"threads": threads} if threads else {}
    if device:
        environment["device"] = device
    trainer = Trainer(config, folder, resume=True, quiet=True, environment=environment)
    metrics = trainer.run()
    found = inside_of_run(trainer.model, trainer.data)
    if found is not None:
        write_inside(folder / INSIDE, found)
    return {
        "status": "done",
        "name": run["name"],
        "labels": run["labels"],
        "seed": run["seed"],
        "config": run["config"],
        "epochs": len(metrics),
        "final": metrics[-1],
        "best": _best(metrics),
        "train_seconds": round(sum(m.get("epoch_seconds", 0.0) for m in metrics), 3),
        "costs": costs(trainer.model, trainer.data, trainer.config),
    }


def _best(metrics: list[dict[str, Any]]) -> dict[str, Any]:
    if "test_accuracy" in metrics[-1]:
        return max(metrics, key=lambda m: m["test_accuracy"])
    if "val_bpc" in metrics[-1]:
        return min(metrics, key=lambda m: m["val_bpc"])
    return metrics[-1]


def costs(model: torch.nn.Module, data: Any, config: Any) -> dict[str, Any]:
    """Energy (pJ, Horowitz 45 nm) of one training step per sample and of one inference, and the
    deployed model's size, from ``qnnlab.analysis``; a model it cannot count says why."""
    from qnnlab.analysis import profile
    from qnnlab.data import TextData

    model = model.cpu()
    if isinstance(data, TextData):
        example = torch.randint(0, data.vocab_size, (2, config.seq_len))
        per_sample = 2
    else:
        example = torch.randn(config.batch_size, *data.shape)
        per_sample = config.batch_size
    try:
        train = profile(
            model,
            example,
            train=True,
            optimizer=config.optimizer,
            loss=config.loss,
            clip_latent=bool(config.clip_latent),
        )
        infer = profile(model, example[:1], train=False, optimizer=None)
    except (ValueError, TypeError, NotImplementedError, RuntimeError) as exc:
        return {"error": f"not counted: {exc}"}
    return {
        "train_step_pj_per_sample": train.energy_pj() / per_sample,
        "inference_pj": infer.energy_pj(),
        "deployed_weight_bits": infer.memory_bits("weights_deployed"),
        "latent_weight_bits": train.memory_bits("weights_latent"),
        "not_counted": sorted(set(train.not_counted)),
    }
