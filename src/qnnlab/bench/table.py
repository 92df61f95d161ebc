"""The figures README's speed tables quote, from the records ``qnnlab bench ... --json`` appends
(``benchmarks/speed_records.sh`` keeps one row per case and run): per case, the median over its
runs with the range, against the strongest int8 and float32 baselines of each run, for the GEMM
its share of the popcount bound and for the weight-only products their time over one read of
their packed weights from memory. ``qnnlab bench table FILE...``."""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

CASE = ("name", "shape", "threads", "beside_a_busy_process")


def read(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    rows = []
    for path in paths:
        for number, line in enumerate(Path(path).read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number} is not a JSON row of qnnlab bench --json ({exc.msg})") from None
            if not isinstance(row, dict) or not {"name", "shape", "qnnlab_ms"} <= set(row):
                raise ValueError(f"{path}:{number} lacks name, shape or qnnlab_ms: not a qnnlab bench row")
            rows.append(row)
    return rows


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 4), "low": min(values), "high": max(values)}


def _strongest(runs: list[dict[str, Any]], kind: str) -> dict[str, Any] | None:
    """Each run's smallest speed-up over the baselines named ``kind`` (int8, float32): median,
    range and which baselines they were."""
    ratios, names = [], set()
    for run in runs:
        matching = {name: b["speedup"] for name, b in run.get("baselines", {}).items() if kind in name}
        if matching:
            name = min(matching, key=matching.get)
            ratios.append(matching[name])
            names.add(name)
    return {**_spread(ratios), "by": sorted(names)} if ratios else None


def _machine(run: dict[str, Any]) -> str:
    return f"{run['cpu']}, int8 units: {run.get('int8_units', 'not recorded')}"


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    cases: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        cases.setdefault(tuple(row.get(field) for field in CASE), []).append(row)
    table = []
    for (name, shape, threads, busy), runs in cases.items():
        case = {"name": name, "shape": shape, "threads": threads, "busy": bool(busy), "runs": len(runs)}
        case["measured_on"] = sorted({_machine(run) for run in runs if "cpu" in run})
        case["qnnlab_ms"] = _spread([run["qnnlab_ms"] for run in runs])
        alone = [run["qnnlab_alone_ms"] for run in runs if "qnnlab_alone_ms" in run]
        if alone:
            case["qnnlab_alone_ms"] = _spread(alone)
        for kind in ("int8", "float32"):
            if strongest := _strongest(runs, kind):
                case[f"vs_{kind}"] = strongest
        for field in ("of_bound", "times_stream"):  # the GEMM's share of its bound; a product's time over one read
            if all(field in run for run in runs):
                case[field] = _spread([run[field] for run in runs])
        table.append(case)
    return table


def markdown(table: list[dict[str, Any]]) -> str:
    def ratio(entry: dict[str, Any] | None, digits: int = 2) -> str:
        if entry is None:
            return "-"
        by = f", {' / '.join(entry['by'])}" if "by" in entry else ""
        return f"{entry['median']:.{digits}f} ({entry['low']:.{digits}f}-{entry['high']:.{digits}f}{by})"

    machines = sorted({machine for case in table for machine in case.get("measured_on", [])})
    lines = [f"Measured on {'; '.join(machines)}.", ""] if machines else []
    lines += [
        "| case | threads | runs | qnnlab ms, interleaved / alone | / strongest int8 | / strongest float32 "
        "| of bound / x the read |",
        "|---|---|---|---|---|---|---|",
    ]
    for case in table:
        alone = f" / {case['qnnlab_alone_ms']['median']:.3g}" if "qnnlab_alone_ms" in case else ""
        bound_or_read = ratio(case["of_bound"], 3) if "of_bound" in case else ratio(case.get("times_stream"))
        lines.append(
            f"| {case['name']} {case['shape']} | {case['threads']}{', busy' if case['busy'] else ''} | {case['runs']} "
            f"| {case['qnnlab_ms']['median']:.3g}{alone} | {ratio(case.get('vs_int8'))} "
            f"| {ratio(case.get('vs_float32'))} | {bound_or_read} |"
        )
    return "\n".join(lines)
