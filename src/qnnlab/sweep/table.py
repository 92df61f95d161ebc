"""One row per configuration of a sweep: mean, standard deviation and count over seeds, and the
difference from a reference configuration with its spread.

The difference is paired by seed where both configurations ran the same seeds (the seed fixes
initialisation and data order, so pairing removes that share of the noise): mean and sample
standard deviation of the per-seed differences. Otherwise it is the difference of the means with
the spread sqrt(s_a^2/n_a + s_r^2/n_r).
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from pathlib import Path
from typing import Any

from qnnlab.sweep.records import read_plan, result
from qnnlab.sweep.spec import SweepError

METRICS = {"test_accuracy": ("accuracy %", 100.0), "val_bpc": ("bpc", 1.0)}


def records(out: str | Path) -> list[dict[str, Any]]:
    """Every finished run's record (``result.json`` with status done) of the sweep in ``out``."""
    root = Path(out)
    found = []
    for run in read_plan(root):
        record = result(root / run["name"])
        if record is not None and record["status"] == "done":
            found.append({**record, "configuration": run["configuration"]})
    return found


def _metric(recs: list[dict[str, Any]], metric: str | None) -> str:
    if metric:
        return metric
    return next((m for m in METRICS if recs and m in recs[0]["final"]), "test_accuracy")


def rows(
    out: str | Path, reference: str | None = None, metric: str | None = None, which: str = "final"
) -> list[dict[str, Any]]:
    """Summary rows in the plan's order; ``which``: the ``final`` epoch's or the ``best`` epoch's metric."""
    if which not in ("final", "best"):
        raise SweepError(f"which={which!r}; use final or best")
    recs = records(out)
    metric = _metric(recs, metric)
    scale = METRICS.get(metric, (metric, 1.0))[1]
    by_config: dict[str, dict[int, float]] = {}
    labels: dict[str, dict[str, str]] = {}
    for rec in recs:
        if metric not in rec[which]:
            raise SweepError(f"run {rec['name']} has no metric {metric!r}; it has {', '.join(rec[which])}")
        by_config.setdefault(rec["configuration"], {})[rec["seed"]] = scale * rec[which][metric]
        labels[rec["configuration"]] = rec["labels"]
    if reference is not None and reference not in by_config:
        raise SweepError(f"reference {reference!r} has no finished run; configurations: {', '.join(by_config)}")
    several_axes = any(len(axis_labels) > 1 for axis_labels in labels.values())
    table = []
    for name, values in by_config.items():
        row = {
            "configuration": name,
            **(labels[name] if several_axes else {}),  # one axis: its label is the configuration's name
            "n": len(values),
            "mean": statistics.fmean(values.values()),
            "std": statistics.stdev(values.values()) if len(values) > 1 else math.nan,
        }
        if reference is not None:
            row["diff"], row["diff_spread"] = _difference(values, by_config[reference])
        table.append(row)
    return table


def _difference(a: dict[int, float], ref: dict[int, float]) -> tuple[float, float]:
    if set(a) == set(ref):
        diffs = [a[s] - ref[s] for s in a]
        return statistics.fmean(diffs), statistics.stdev(diffs) if len(diffs) > 1 else math.nan
    spread = math.sqrt(sum(statistics.variance(v.values()) / len(v) if len(v) > 1 else math.nan for v in (a, ref)))
    return statistics.fmean(a.values()) - statistics.fmean(ref.values()), spread


def render(table: list[dict[str, Any]], style: str = "text", digits: int = 2) -> str:
    """``text`` (aligned columns), ``markdown`` or ``csv``."""
    if not table:
        return "no finished runs yet"
    columns = list(dict.fromkeys(k for row in table for k in row))
    if style == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(table)
        return buffer.getvalue().rstrip("\n")
    cells = [[_cell(row.get(c, ""), digits) for c in columns] for row in table]
    if style == "markdown":
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in cells])
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in [columns, *cells])


def _cell(value: Any, digits: int) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)
