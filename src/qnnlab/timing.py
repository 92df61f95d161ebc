"""Side-by-side timing: each candidate is measured in alternation with its baseline, so machine
noise hits both alike; results are medians of several repeats, and ratios are taken per repeat."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _check_repeats(repeats: int) -> None:
    if repeats < 1:
        raise ValueError(f"--repeats {repeats}: a median needs at least 1 timed repeat (5 or more for a stable one)")


def _times_ms(
    fn: Callable[[], object], repeats: int, warmup: int, before: Callable[[], object] | None = None
) -> list[float]:
    _check_repeats(repeats)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if before is not None:
            before()
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    return statistics.median(_times_ms(fn, repeats, warmup))


def cold_ms(fn: Callable[[], object], flush: Callable[[], object], repeats: int) -> float:
    """The median of ``repeats`` runs each right after an untimed ``flush()`` that evicts the
    caches: the time with fn's data coming from memory, as a large model's weights do."""
    return statistics.median(_times_ms(fn, repeats, 1, flush))


def best_ms(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    """The fastest of ``repeats`` back-to-back runs: what the code reaches when the host lets it, to
    set beside a bound measured the same way (noise only ever adds time)."""
    return min(_times_ms(fn, repeats, warmup))


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


def interleaved_ms(
    candidate: Callable[[], object], baselines: dict[str, Callable[[], object]], repeats: int, warmup: int = 2
) -> tuple[float, dict[str, float], dict[str, float]]:
    """The candidate against several baselines, each round timing all of them in turn: (candidate
    median ms, each baseline's median ms, each baseline's median per-round ratio baseline/candidate)."""
    _check_repeats(repeats)
    for _ in range(warmup):
        candidate()
        for fn in baselines.values():
            fn()
    cand: list[float] = []
    base: dict[str, list[float]] = {name: [] for name in baselines}
    ratios: dict[str, list[float]] = {name: [] for name in baselines}
    for _ in range(repeats):
        start = time.perf_counter()
        candidate()
        c = (time.perf_counter() - start) * 1e3
        cand.append(c)
        for name, fn in baselines.items():
            start = time.perf_counter()
            fn()
            b = (time.perf_counter() - start) * 1e3
            base[name].append(b)
            ratios[name].append(b / c)
    medians = {name: statistics.median(values) for name, values in base.items()}
    return statistics.median(cand), medians, {name: statistics.median(values) for name, values in ratios.items()}


def cpu_name() -> str:
    """The processor's model name and its microarchitecture as the kernels' compiler (LLVM) names it,
    e.g. "AMD EPYC (znver2)", printed with every timing: the machines here change, and a model name
    alone may not say which generation (and so which vector instructions) ran."""
    import llvmlite.binding as llvm

    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} ({llvm.get_host_cpu_name()})"


def int8_units() -> str:
    """The widest int8 multiply-accumulate units the CPU has, as LLVM detects them, printed with every
    timing because they set how strong the int8 baselines are: per core and cycle, AMX tiles do 1024
    int8 multiply-accumulates (a 16 x 16 x 64 TDPBUSD every 16 cycles), AVX-512 VNNI 128 (two 64-lane
    VPDPBUSD), while XOR + VPOPCNTQ + add do 512 binary ones (one popcount port). oneDNN, under
    OpenVINO and torch, uses AMX where the CPU has it."""
    import llvmlite.binding as llvm

    features = llvm.get_host_cpu_features()
    for feature, units in (("amx-int8", "AMX"), ("avx512vnni", "AVX-512 VNNI"), ("avxvnni", "AVX-VNNI")):
        if features.get(feature):
            return units
    return "none"


def versus(candidate_ms: float, baseline_ms: dict[str, float], ratios: dict[str, float]) -> dict[str, Any]:
    """The fields a benchmark row reports for an ``interleaved_ms`` result: the strongest baseline
    (the one the candidate gains least against), its time and speed-up, every baseline's, and the
    CPU."""
    strongest = min(ratios, key=ratios.get)
    return {
        "cpu": cpu_name(),
        "int8_units": int8_units(),
        "qnnlab_ms": round(candidate_ms, 4),
        "baseline": strongest,
        "baseline_ms": round(baseline_ms[strongest], 4),
        "speedup": round(ratios[strongest], 2),
        "baselines": {
            name: {"ms": round(baseline_ms[name], 4), "speedup": round(ratios[name], 2)} for name in baseline_ms
        },
    }
