"""What a sweep folder holds now: runs done / running / failed / left, each running run's epoch, an ETA.

Read from the run folders alone, so it shows the same for every engine and for ``qnnlab sweep
status`` in another shell.
"""

from __future__ import annotations

import statistics
import sys
import threading
from pathlib import Path
from typing import Any, TextIO

from qnnlab.sweep.records import epochs_done, state

STATES = ("done", "running", "failed", "interrupted", "pending")


def snapshot(root: Path, plan: list[dict[str, Any]], parallel: int = 1) -> dict[str, Any]:
    counts = dict.fromkeys(STATES, 0)
    running, seconds, left = [], {}, []
    for run in plan:
        folder = root / run["name"]
        now = state(folder)
        counts[now] += 1
        metrics = epochs_done(folder)
        seconds.setdefault(run["configuration"], []).extend(m["epoch_seconds"] for m in metrics if "epoch_seconds" in m)
        if now in ("running", "interrupted", "pending"):
            left.append((run["configuration"], run["config"]["epochs"] - len(metrics)))
        if now == "running":
            running.append(f"{run['name']} epoch {len(metrics) + 1}/{run['config']['epochs']}")
    measured = [s for values in seconds.values() for s in values]
    eta = None
    if measured:  # each configuration's median epoch time where measured, else that of all
        overall = statistics.median(measured)
        eta = sum(n * (statistics.median(seconds[c]) if seconds.get(c) else overall) for c, n in left) / max(
            1, parallel
        )
    return {"counts": counts, "total": len(plan), "running": running, "eta_seconds": eta}


def describe(snap: dict[str, Any]) -> list[str]:
    c = snap["counts"]
    left = c["pending"] + c["interrupted"]
    eta = snap["eta_seconds"]
    line = (
        f"runs {c['done']}/{snap['total']} done, {c['running']} running, {c['failed']} failed, {left} left"
        + (f" ({c['interrupted']} interrupted, will resume)" if c["interrupted"] else "")
        + (f"; ETA {_duration(eta)}" if eta is not None and (left or c["running"]) else "")
    )
    return [line] + [f"  {r}" for r in snap["running"]]


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{max(minutes, 1)} min"


class Display:
    """Redraws the snapshot every ``interval`` seconds on a terminal, else prints it when it changes."""

    def __init__(
        self,
        root: Path,
        plan: list[dict[str, Any]],
        parallel: int,
        stream: TextIO = sys.stderr,
        interval: float = 2.0,
        enabled: bool = True,
    ) -> None:
        self.enabled = enabled
        self.root, self.plan, self.parallel, self.stream, self.interval = root, plan, parallel, stream, interval
        self.tty = stream.isatty()
        self._drawn, self._last = 0, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Display:
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.enabled:
            self._stop.set()
            self._thread.join()
            self.draw()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.draw()

    def draw(self) -> None:
        lines = describe(snapshot(self.root, self.plan, self.parallel))
        if self.tty:
            up = f"\x1b[{self._drawn}F" if self._drawn else ""
            self.stream.write(up + "".join(f"\x1b[2K{line}\n" for line in lines) + "\x1b[J")
            self._drawn = len(lines)
        elif lines[0] != self._last:
            self.stream.write(lines[0] + "\n")
        self._last = lines[0]
        self.stream.flush()
