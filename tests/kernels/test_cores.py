"""Free cores: what other processes leave of this process's CPUs, and the kernels' pool following it."""

import pytest
import torch

from qnnlab import kernels
from qnnlab.kernels import _cores


class Machine:
    """Fake clock and CPU-time counters: ``run(seconds, others=, own=)`` advances them."""

    def __init__(self) -> None:
        self.now, self.busy, self.own = 0.0, 100.0, 10.0

    def run(self, seconds: float, others: float = 0.0, own: float = 0.0) -> None:
        self.now += seconds
        self.busy += seconds * (others + own)
        self.own += seconds * own

    def cores(self, cpus=(0, 1)) -> _cores.FreeCores:
        return _cores.FreeCores(set(cpus), lambda _: self.busy, lambda: self.own, lambda: self.now)


def test_cores_another_process_keeps_busy_are_not_free():
    machine = Machine()
    cores = machine.cores()
    assert cores.free() == 2  # nothing measured yet
    machine.run(0.5, others=1.0, own=0.3)
    assert cores.free() == 1
    machine.run(0.5, others=0.0, own=2.0)  # our own threads, torch's spinning workers too, are ours
    assert cores.free() == 2


def test_free_cores_stay_within_one_and_the_allowed_cpus():
    machine = Machine()
    cores = machine.cores()
    cores.free()
    machine.run(0.5, others=5.0)
    assert cores.free() == 1
    machine.run(0.5)
    machine.own += 30.0  # a finished child's whole time lands at once
    assert cores.free() == 2


def test_free_cores_are_measured_at_most_once_per_window():
    machine = Machine()
    cores = machine.cores(cpus=range(4))
    cores.free()
    machine.run(_cores.WINDOW / 2, others=2.0)
    assert cores.free() == 4  # inside the window: the last value
    machine.run(_cores.WINDOW, others=2.0)
    assert cores.free() == 2


def test_without_proc_stat_every_allowed_core_is_free(tmp_path):
    reads = []
    cores = _cores.FreeCores({0, 1, 2}, busy=lambda _: reads.append(1))
    assert cores.free() == 3 and cores.free() == 3
    assert len(reads) == 1  # a missing file is not looked for on every launch
    assert _cores.busy_seconds({0}, str(tmp_path / "missing")) is None


def test_busy_seconds_read_only_the_allowed_cpus(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text(
        "cpu  900 0 900 9000 0 0 0 0 0 0\ncpu0 100 1 10 5000 7 2 3 50 0 0\ncpu1 200 0 20 4000 0 0 0 0 0 0\nintr 12345\n"
    )
    tick = _cores.os.sysconf("SC_CLK_TCK")
    assert _cores.busy_seconds({0}, str(stat)) == pytest.approx(
        (100 + 1 + 10 + 2 + 3) / tick
    )  # not idle, iowait, steal
    assert _cores.busy_seconds({0, 1}, str(stat)) == pytest.approx((116 + 220) / tick)


def test_the_pool_runs_on_the_free_cores_when_fewer_than_torchs_threads(monkeypatch):
    class Fixed:
        def __init__(self, free: int) -> None:
            self.count = free

        def free(self) -> int:
            return self.count

    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        fixed = Fixed(1)
        monkeypatch.setattr(kernels, "_FREE_CORES", fixed)
        assert kernels.parallel_threads() == 1
        a = kernels.pack(torch.ones(64, 4096))
        assert torch.equal(kernels.binary_matmul(a, a, 4096), torch.full((64, 64), 4096, dtype=torch.int32))
        fixed.count = 2
        assert kernels.parallel_threads() == 2
        assert torch.get_num_threads() == 2  # torch's own count is left alone
    finally:
        torch.set_num_threads(previous)
