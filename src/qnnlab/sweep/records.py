"""A sweep's records: the plan (``sweep.json``) and one ``result.json`` per finished run.

``OUT/sweep.json`` lists every planned run (name, labels, seed, resolved config). Each run is an
ordinary run folder (``qnnlab train``'s config, metrics, checkpoint) plus, when it ends,
``result.json``: status ``done`` (config, labels, final and best metrics, times, cost figures) or
``failed`` (error and traceback), and for an image classifier ``inside.json``, its weight and
activation histograms (``qnnlab.analysis.inside``). All are written atomically. ``claimed`` holds the process that
trains the run now; an exclusive lock on ``.sweep.lock`` makes sure only one does.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from qnnlab.run.config import from_dict
from qnnlab.storage import atomic_write, remove_stale_temporaries
from qnnlab.sweep.spec import PlannedRun, SweepError

PLAN = "sweep.json"
RESULT = "result.json"
CLAIM = "claimed"
LOCK = ".sweep.lock"
TIMING_KEYS = ("epoch_seconds", "train_seconds", "wall_seconds")  # measurements, not results
ENVIRONMENT_KEYS = ("device", "threads", "data_root")


def write_json(path: Path, value: Any) -> None:
    atomic_write(path, lambda p: p.write_text(json.dumps(value, indent=1) + "\n"))


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SweepError(f"{path}: unreadable record ({exc}); delete it to run that part again") from None


def what_is_trained(config: dict[str, Any]) -> dict[str, Any]:
    """The config as it decides training: fields added to qnnlab since it was written take their
    defaults (which keep the old behaviour), and where the run executes and the recipe's description
    (words, which decide nothing) are left out."""
    full = from_dict(config, source="recorded config").to_dict()
    return {k: v for k, v in full.items() if k not in ENVIRONMENT_KEYS and k != "description"}


def write_plan(out: Path, runs: list[PlannedRun], source: str) -> None:
    """Record the plan; a folder planned before keeps each run it shares only with the same config."""
    planned = {run.name: run.to_dict() for run in runs}
    if (out / PLAN).is_file():
        for old in read_json(out / PLAN)["runs"]:
            new = planned.get(old["name"])
            if new is not None and what_is_trained(new["config"]) != what_is_trained(old["config"]):
                before = what_is_trained(old["config"])
                changed = sorted(k for k, v in what_is_trained(new["config"]).items() if before.get(k) != v)
                raise SweepError(
                    f"{out} already holds run {old['name']} with another config (fields {changed}); "
                    f"use another --out, or give the changed configuration a new label"
                )
            if new is None:
                planned[old["name"]] = old
    write_json(out / PLAN, {"source": source, "runs": list(planned.values())})


def read_plan(out: Path) -> list[dict[str, Any]]:
    if not (out / PLAN).is_file():
        raise SweepError(f"{out} holds no sweep ({PLAN} is missing); start one with qnnlab sweep FILE --out {out}")
    plan = read_json(out / PLAN)
    runs = plan.get("runs") if isinstance(plan, dict) else None
    if not isinstance(runs, list) or not all(
        isinstance(r, dict) and isinstance(r.get("name"), str) and isinstance(r.get("config"), dict) for r in runs
    ):
        raise SweepError(f"{out / PLAN}: not a sweep plan (a 'runs' list of name and config); damaged or foreign")
    return runs


def result(folder: Path) -> dict[str, Any] | None:
    if not (folder / RESULT).is_file():
        return None
    record = read_json(folder / RESULT)
    if not isinstance(record, dict) or record.get("status") not in ("done", "failed"):
        raise SweepError(f"{folder / RESULT}: not a run record; delete it to train that run again")
    return record


@contextlib.contextmanager
def claim(folder: Path) -> Iterator[bool]:
    """Hold the run folder exclusively; yields False where another process holds it."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        remove_stale_temporaries(folder)  # half-written files of a killed holder; we hold the folder now
        write_json(folder / CLAIM, {"pid": os.getpid(), "host": socket.gethostname()})
        try:
            yield True
        finally:
            (folder / CLAIM).unlink(missing_ok=True)
            fcntl.flock(handle, fcntl.LOCK_UN)


def state(folder: Path) -> str:
    """done, failed, running, interrupted (started, nobody holds it) or pending."""
    record = result(folder)
    if record is not None:
        if (folder / CLAIM).is_file() and not _claim_alive(folder):
            (folder / CLAIM).unlink(missing_ok=True)  # its holder was killed after writing the record
        return record["status"]
    if (folder / CLAIM).is_file() and _claim_alive(folder):
        return "running"
    return "interrupted" if (folder / "metrics.jsonl").is_file() else "pending"


def _claim_alive(folder: Path) -> bool:
    try:
        holder = json.loads((folder / CLAIM).read_text())
    except (OSError, json.JSONDecodeError):
        return False  # half-written or just removed
    if holder.get("host") != socket.gethostname():
        return True  # another machine of the cluster; its lock is not visible from here
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, KeyError):
        return True
    return True


def epochs_done(folder: Path) -> list[dict[str, Any]]:
    try:
        lines = (folder / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return []
    return [json.loads(line) for line in lines if line.strip()]


def without_timing(value: Any) -> Any:
    """A record with its measured times removed: what two runs of the same config must agree on."""
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value
