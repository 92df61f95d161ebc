"""bench gemm prints the contract's fields; correctness lives in tests/kernels."""

import json

import pytest

from qnnlab import kernels
from qnnlab.cli import main


@pytest.mark.parametrize("vnni", [True, False])
def test_bench_gemm_json(vnni, capsys, monkeypatch):
    monkeypatch.setattr(kernels, "int8_dot_products", lambda: vnni)
    assert (
        main(["bench", "gemm", "--sizes", "64,130", "--gemv", "256", "--bitserial", "64", "--repeats", "2", "--json"])
        == 0
    )
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["name"] for r in rows] == [
        "binary_gemm",
        "binary_gemm",
        "binary_gemv",
        "weight_only_gemv",
        "weight_only_gemv_int8",
        "bitserial_1x1_gemm",
        "bitserial_2x2_gemm",
        "bitserial_4x4_gemm",
        "bitserial_8x1_gemm",
    ]
    for row in rows:
        assert {"name", "shape", "qnnlab_ms", "baseline_ms", "speedup"} <= set(row) and row["qnnlab_ms"] > 0
    # torch's int8 GEMM is a baseline only where the CPU has VNNI; elsewhere it is a reference loop
    expected = {"torch-float32", "torch-int8"} if vnni else {"torch-float32"}
    assert set(rows[0]["baselines"]) == expected and rows[0]["cpu"]
    assert rows[0]["binary_macs_per_second"] > 0 and rows[0]["bound_macs_per_second"] > 0
    assert 0 < rows[0]["of_bound"] and 0 < rows[0]["of_bound_best"]
    assert set(rows[3]["baselines"]) == set(rows[4]["baselines"]) == expected
    # the ratio to one read of the weights, as the row's rounded figures give it (a busy host can
    # make the read of a tiny matrix slow enough that the ratio rounds to 0)
    row = rows[4]
    assert row["stream_ms"] > 0 and row["stream_warm_ms"] > 0
    assert row["times_stream"] == pytest.approx(row["from_memory_ms"] / row["stream_ms"], rel=0.02, abs=0.01)
    assert row["times_stream_warm"] == pytest.approx(row["from_cache_ms"] / row["stream_warm_ms"], rel=0.02, abs=0.01)
    lookups = kernels.sign_weight_lookups()
    assert {r["method"] for r in rows[3:5]} == {"table lookups" if lookups else "masked additions"}
    assert main(["bench", "gemm", "--sizes", "64", "--gemv", "0", "--bitserial", "0", "--repeats", "2"]) == 0
    assert main(["bench", "gemm", "--gemv", "-3"]) == 2
    assert main(["bench", "gemm", "--sizes", "a,b"]) == 2
    assert main(["bench", "gemm", "--sizes", "0"]) == 2


def test_the_share_of_the_bound_is_the_median_ratio_to_a_loop_of_as_many_macs(monkeypatch):
    from qnnlab.bench import gemm

    sized = []
    monkeypatch.setattr(kernels, "popcount_loop", lambda macs: sized.append(macs) or (lambda: 2 * macs))
    monkeypatch.setattr(gemm, "paired_ms", lambda product, loop, repeats: (1.0, 1.6, 1.6))
    row = gemm._gemm_row(64, 2, 1e12)
    assert sized == [64**3] and row["of_bound"] == 0.8  # the loop ran twice the MACs in 1.6x the time


def test_cold_timing_flushes_before_every_timed_run():
    from qnnlab.timing import cold_ms

    calls = []
    assert cold_ms(lambda: calls.append("run"), lambda: calls.append("flush"), 3) >= 0
    assert calls == ["run", "flush", "run", "flush", "run", "flush", "run"]  # one untimed warm-up first
