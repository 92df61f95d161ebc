"""How many of this process's cores other processes leave free, so that a parallel kernel does not
wait on a thread whose core another process holds.

A fork-join region ends when its slowest thread does: with one of two cores kept busy elsewhere,
a two-thread kernel runs at the pace of the time slices the busy core grants its second thread
(README's speed section has the measurements). Over the last
``WINDOW`` seconds, the busy time of the allowed CPUs (``/proc/stat``) less this process's own CPU
time (``getrusage``: its threads, torch's spinning OpenMP workers included, and its finished
children) is the work of other processes; the cores it fills are not free. Measured at most once
per window (two small reads), so a call costs nothing more most of the time. Where
``/proc/stat`` is missing (not Linux), every allowed core counts as free.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable

WINDOW = 0.2  # seconds: /proc/stat counts in 10 ms ticks, so shorter windows read as noise
BUSY_FIELDS = (0, 1, 2, 5, 6)  # user nice system (idle iowait) irq softirq; steal is the host's, not a process's


def allowed_cpus() -> set[int]:
    return os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))


def busy_seconds(cpus: set[int], path: str = "/proc/stat") -> float | None:
    """Seconds the CPUs ``cpus`` spent on any process since boot; None where the file is missing."""
    try:
        lines = open(path).read().splitlines()  # noqa: SIM115 - one small read
    except OSError:
        return None
    ticks = 0
    for line in lines:
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            ticks += sum(int(fields[i]) for i in BUSY_FIELDS)
    return ticks / os.sysconf("SC_CLK_TCK")


def own_seconds() -> float:
    """CPU seconds of this process and of its children it has waited for (a subprocess's time
    lands here when it ends, so a run of our own helper is not taken for another's load)."""
    return sum(
        usage.ru_utime + usage.ru_stime
        for usage in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
    )


class FreeCores:
    """``free()``: allowed cores minus those other processes kept busy over the last window (at
    least 1). The readers are arguments so tests can feed them."""

    def __init__(
        self,
        cpus: set[int] | None = None,
        busy: Callable[[set[int]], float | None] = busy_seconds,
        own: Callable[[], float] = own_seconds,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cpus = allowed_cpus() if cpus is None else cpus
        self._busy, self._own, self._clock = busy, own, clock
        self._last: tuple[float, float, float] | None = None
        self._free = len(self.cpus)
        self._unavailable = False  # no /proc/stat: not looked for again

    def free(self) -> int:
        now, last = self._clock(), self._last  # one read of _last: another thread may replace it
        if self._unavailable or (last is not None and now - last[0] < WINDOW):
            return self._free
        busy = self._busy(self.cpus)
        if busy is None:
            self._unavailable = True
            return self._free
        own = self._own()
        if last is not None:
            others = (busy - last[1]) - (own - last[2])
            held = round(others / (now - last[0]))
            self._free = min(len(self.cpus), max(1, len(self.cpus) - held))
        self._last = (now, busy, own)
        return self._free
