"""A results table of run folders, read from their records (config.yaml, metrics.jsonl)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml


def collect(root: str | Path) -> list[dict[str, Any]]:
    """One row per run folder under ``root`` (searched recursively) that has metrics."""
    rows = []
    for metrics_file in sorted(Path(root).rglob("metrics.jsonl")):
        folder = metrics_file.parent
        try:
            metrics = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
            config = yaml.safe_load((folder / "config.yaml").read_text()) if (folder / "config.yaml").is_file() else {}
        except (json.JSONDecodeError, yaml.YAMLError) as exc:
            raise ValueError(f"{folder}: unreadable run records ({exc})") from None
        if not metrics:
            continue
        last = metrics[-1]
        row = {
            "run": str(folder.relative_to(root)) if folder != Path(root) else folder.name,
            "recipe": config.get("recipe", "?"),
            "model": config.get("model", "?"),
            "dataset": config.get("dataset", "?"),
            "epochs": f"{last['epoch']}/{config.get('epochs', '?')}",
            "minutes": round(sum(m.get("epoch_seconds", 0.0) for m in metrics) / 60, 1),
        }
        if "test_accuracy" in last:
            row.update(
                final=f"{100 * last['test_accuracy']:.2f}%",
                best=f"{100 * max(m['test_accuracy'] for m in metrics):.2f}%",
            )
        elif "val_bpc" in last:
            row.update(final=f"{last['val_bpc']:.3f} bpc", best=f"{min(m['val_bpc'] for m in metrics):.3f} bpc")
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    columns = ["run", "recipe", "model", "dataset", "epochs", "final", "best", "minutes"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)
