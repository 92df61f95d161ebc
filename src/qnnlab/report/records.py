"""What a report reads: the sweeps (folders with ``sweep.json``, their runs' ``result.json``,
``metrics.jsonl`` and ``inside.json``), the estimator measurements (``estimator-bias-variance.json``),
the demo's ``speed.json`` and benchmark records (``bench/model-*.jsonl``, also in a folder per CPU
below ``bench``, and ``bench/analyze-*.json``) found under the folders it is given."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from qnnlab.analysis.inside import INSIDE
from qnnlab.sweep.table import records, rows

ESTIMATOR_FILE = "estimator-bias-variance.json"


@dataclasses.dataclass
class Records:
    sweeps: dict[str, Path]  # study name (the sweep folder's name) -> folder
    estimator_rows: list[dict[str, Any]]
    speed: dict[str, Any] | None = None  # the demo's speed.json: the packed BNN timed against float
    bench: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # bench/model-*.jsonl rows
    analyses: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # bench/analyze-*.json by name

    @classmethod
    def find(cls, folders: list[str | Path]) -> Records:
        sweeps: dict[str, Path] = {}
        estimator_rows: list[dict[str, Any]] = []
        for folder in map(Path, folders):
            if not folder.is_dir():
                raise ValueError(f"{folder} is not a folder of records (sweep folders, {ESTIMATOR_FILE})")
            for plan in sorted(
                [*folder.glob("sweep.json"), *folder.glob("*/sweep.json"), *folder.glob("*/*/sweep.json")]
            ):
                sweeps.setdefault(plan.parent.name, plan.parent)
            for file in sorted([*folder.glob(ESTIMATOR_FILE), *folder.glob(f"*/{ESTIMATOR_FILE}")]):
                try:
                    estimator_rows += json.loads(file.read_text())
                except (OSError, json.JSONDecodeError) as exc:
                    raise ValueError(f"{file}: unreadable estimator records ({exc})") from None
        speeds = sorted(
            p for folder in map(Path, folders) for p in [*folder.glob("speed.json"), *folder.glob("*/speed.json")]
        )
        try:
            speed = json.loads(speeds[0].read_text()) if speeds else None
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{speeds[0]}: unreadable speed record ({exc})") from None
        bench = []
        for file in sorted(p for folder in map(Path, folders) for p in folder.glob("*/bench/**/model-*.jsonl")):
            try:
                bench += [json.loads(line) for line in file.read_text().splitlines() if line.strip()]
            except (OSError, json.JSONDecodeError) as exc:
                raise ValueError(f"{file}: unreadable benchmark record ({exc})") from None
        analyses = {}
        for file in sorted(p for folder in map(Path, folders) for p in folder.glob("*/bench/analyze-*.json")):
            try:
                analyses[file.stem.removeprefix("analyze-")] = json.loads(file.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise ValueError(f"{file}: unreadable analysis record ({exc})") from None
        if not sweeps and not estimator_rows and speed is None and not bench and not analyses:
            names = ", ".join(map(str, folders))
            raise ValueError(f"{names}: no study records (sweep folders with sweep.json, {ESTIMATOR_FILE}, speed.json)")
        return cls(sweeps, estimator_rows, speed, bench, analyses)

    def table(self, study: str, reference: str | None = None) -> list[dict[str, Any]]:
        """Seed-aggregated rows of ``study`` (empty when it has no finished run)."""
        finished = records(self.sweeps[study]) if study in self.sweeps else []
        if not finished:
            return []
        if reference not in {r["configuration"] for r in finished}:
            reference = None  # a study still running: its reference has not finished yet
        return rows(self.sweeps[study], reference=reference)

    def inside(self, configurations: tuple[str, ...]) -> dict[str, dict[str, Any]]:
        """The ``inside.json`` record (``qnnlab.analysis.inside``) of each of ``configurations``
        found in any sweep, from its first seed that has one, e.g. the float, BinaryConnect and BNN
        runs; each carries the sweep's name under ``"study"``."""
        found: dict[str, dict[str, Any]] = {}
        for study, folder in self.sweeps.items():
            for name in configurations:
                files = sorted(folder.glob(f"{name}/seed*/{INSIDE}"))
                if files and name not in found:
                    found[name] = {**_read_inside(files[0]), "study": study}
        return found

    def curves(self, study: str) -> dict[str, list[list[float]]]:
        """Test accuracy (%) per epoch of each configuration's finished runs, one list per seed."""
        found: dict[str, list[list[float]]] = {}
        for record in self.results(study):
            metrics_file = self.sweeps[study] / record["name"] / "metrics.jsonl"
            if not metrics_file.is_file():
                continue
            epochs = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
            if epochs and "test_accuracy" in epochs[0]:
                found.setdefault(record["configuration"], []).append([100 * m["test_accuracy"] for m in epochs])
        return found

    def results(self, study: str) -> list[dict[str, Any]]:
        return records(self.sweeps[study]) if study in self.sweeps else []


def _read_inside(file: Path) -> dict[str, Any]:
    try:
        record = json.loads(file.read_text())
        if not isinstance(record, dict) or not isinstance(record.get("layers"), list):
            raise ValueError("no list of layers")
        for layer in record["layers"]:
            for histogram in [*layer["weights"].values(), *layer["activations"].values()]:
                if histogram["count"] and len(histogram["counts"]) < 1:
                    raise ValueError("a histogram without counts")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{file}: unreadable record ({exc}); `qnnlab eval RUN --inside` writes it anew") from None
    return record
