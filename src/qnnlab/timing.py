"""Side-by-side timing: each candidate is measured in alternation with its baseline, so machine
noise hits both alike; results are medians of several repeats, and ratios are taken per repeat."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def _check_repeats(repeats: int) -> None:
    if repeats < 1:
        raise ValueError(f"--repeats {repeats}: a median needs at least 1 timed repeat (5 or more for a stable one)")


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    _check_repeats(repeats)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def paired_ms(
    candidate: Callable[[], object], baseline: Callable[[], object], repeats: int, warmup: int = 2
) -> tuple[float, float, float]:
    """(candidate median ms, baseline median ms, median of per-repeat ratios baseline/candidate)."""
    _check_repeats(repeats)
    for _ in range(warmup):
        candidate()
        baseline()
    cand, base, ratios = [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        baseline()
        b = (time.perf_counter() - start) * 1e3
        start = time.perf_counter()
        candidate()
        c = (time.perf_counter() - start) * 1e3
        cand.append(c)
        base.append(b)
        ratios.append(b / c)
    return statistics.median(cand), statistics.median(base), statistics.median(ratios)
