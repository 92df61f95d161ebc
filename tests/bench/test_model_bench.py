"""bench model: the packed BNN against torch float32 and torch's dynamic int8, interleaved."""

import json
import time

from qnnlab.cli import main
from qnnlab.timing import interleaved_ms


def test_interleaved_timing_gives_each_baseline_its_ratio():
    cand, base, ratios = interleaved_ms(
        lambda: time.sleep(0.002), {"slow": lambda: time.sleep(0.006), "fast": lambda: time.sleep(0.001)}, 3, 0
    )
    assert base["slow"] > cand > base["fast"] and ratios["slow"] > 1.5 and ratios["fast"] < 0.9


def test_bench_model_names_the_strongest_baseline_and_the_cpu(capsys):
    assert main(["bench", "model", "--model", "mlp-small", "--batch", "1,8", "--repeats", "2", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["shape"] for r in rows] == ["batch 1", "batch 8"]
    for row in rows:
        assert set(row["baselines"]) == {"torch-float32", "torch-int8-dynamic"} and row["cpu"]
        fastest = min(row["baselines"], key=lambda name: row["baselines"][name]["ms"])
        assert row["baseline"] == fastest and row["speedup"] == row["baselines"][fastest]["speedup"]
