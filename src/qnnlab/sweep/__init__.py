"""Sweeps: one YAML file names many runs (``spec``); an engine trains them (``engines``), each
leaving a record (``records``); ``table`` summarises the records over seeds.

``run_sweep("tricks.yaml", "runs/tricks", jobs=2)`` validates every run before the first starts,
skips finished runs, resumes interrupted ones and records failures without stopping.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from qnnlab.sweep.engines import ENGINES
from qnnlab.sweep.execute import RUN_PATHS
from qnnlab.sweep.progress import Display
from qnnlab.sweep.records import read_plan, state, write_plan
from qnnlab.sweep.spec import PlannedRun, SweepError, load

STUDY_DIR = "studies"


def studies() -> list[str]:
    """Sweep files shipped with qnnlab, as ``SCALE/NAME`` (``cpu/tricks-mlp``)."""
    root = resources.files("qnnlab") / STUDY_DIR
    return sorted(
        f"{scale.name}/{f.name[:-5]}"
        for scale in root.iterdir()
        if scale.is_dir()
        for f in scale.iterdir()
        if f.name.endswith(".yaml")
    )


def find(name_or_path: str) -> Path:
    """A sweep file's path: a file, or a shipped study ``SCALE/NAME``."""
    path = Path(name_or_path)
    if path.is_file() or path.suffix in (".yaml", ".yml"):
        return path
    if name_or_path in studies():
        return Path(str(resources.files("qnnlab") / STUDY_DIR / f"{name_or_path}.yaml"))
    raise SweepError(f"{name_or_path!r} is neither a sweep file nor a shipped study; studies: {', '.join(studies())}")


def check_models(runs: list[PlannedRun], label: str) -> None:
    """Build each distinct model once (no data loaded beyond its shape), so a bad rule or
    quantizer spec stops the sweep before any run starts."""
    from qnnlab import data as datasets
    from qnnlab.run.config import from_dict
    from qnnlab.run.model import build_model

    shapes: dict[str, Any] = {}
    built: set[str] = set()
    for run in runs:
        config = from_dict(run.config)
        key = repr(
            {
                k: run.config[k]
                for k in (
                    "model",
                    "model_options",
                    "rules",
                    "norm",
                    "activation",
                    "output_norm",
                    "algorithm",
                    "dataset",
                )
            }
        )
        if key in built:
            continue
        if config.dataset not in shapes:
            loaded = datasets.load(config.dataset, config.data_root, image_size=config.image_size)
            shapes[config.dataset] = (
                loaded
                if isinstance(loaded, datasets.TextData)
                else datasets.ImageData.empty(tuple(loaded.shape), loaded.classes)
            )
        try:
            build_model(config, shapes[config.dataset])
        except (ValueError, KeyError, TypeError) as exc:
            raise SweepError(f"{label}: configuration {run.configuration}: {exc}") from None
        built.add(key)


def run_sweep(
    file: str | Path,
    out: str | Path,
    jobs: int = 1,
    engine: str = "local",
    retry_failed: bool = False,
    progress: bool = True,
    **engine_options: Any,
) -> dict[str, int]:
    """Train every run of sweep ``file`` not yet finished into ``out``; returns the count per state."""
    if engine not in ENGINES:
        raise SweepError(f"--engine {engine!r}; use one of {', '.join(ENGINES)}")
    if jobs < 1:
        raise SweepError(f"--jobs {jobs}: give at least 1")
    path = find(str(file))
    runs, _ = load(path)
    check_models(runs, str(path))
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    write_plan(root, runs, str(path))
    plan = [run.to_dict() for run in runs]
    todo = [run for run in plan if state(root / run["name"]) not in ("done",) + (() if retry_failed else ("failed",))]
    starts_inside = [run for run in todo if any("{sweep}" in (run["config"].get(k) or "") for k in RUN_PATHS)]
    with Display(root, plan, jobs, enabled=progress):
        for phase in ([run for run in todo if run not in starts_inside], starts_inside):  # sources first
            if phase:
                ENGINES[engine](phase, str(root), jobs, retry_failed, **engine_options)
    return counts(root)


def counts(out: str | Path) -> dict[str, int]:
    root = Path(out)
    result: dict[str, int] = {}
    for run in read_plan(root):
        now = state(root / run["name"])
        result[now] = result.get(now, 0) + 1
    return result


__all__ = ["PlannedRun", "SweepError", "counts", "find", "load", "run_sweep", "studies"]
