"""bench table: medians and ranges over the runs of a records file, per case."""

import json

from qnnlab.cli import main


def _row(ms, int8, ovino, f32, **extra):
    return {
        "name": "model/cnn",
        "shape": "batch 100",
        "qnnlab_ms": ms,
        "threads": 2,
        "beside_a_busy_process": False,
        "baselines": {
            "ort-int8-static": {"ms": 1, "speedup": int8},
            "openvino-int8": {"ms": 1, "speedup": ovino},
            "ort-float32": {"ms": 1, "speedup": f32},
        },
        **extra,
    }


def test_each_case_gets_its_median_range_and_strongest_baselines(tmp_path, capsys):
    amx = {"cpu": "Intel Xeon (sapphirerapids)", "int8_units": "AMX"}
    runs = [_row(10.0, 2.5, 2.0, 8.0, qnnlab_alone_ms=9.0, **amx), _row(12.0, 2.2, 2.4, 7.0, **amx)]
    runs.append(_row(11.0, 1.9, 3.0, 9.0, cpu="AMD EPYC (znver4)"))  # a record from before int8_units
    gemm = {"name": "binary_gemm", "shape": "1024x1024x1024", "qnnlab_ms": 1.0, "threads": 1, "of_bound": 0.8}
    gemv = {"name": "weight_only_gemv", "shape": "1x4096x4096", "qnnlab_ms": 0.3, "threads": 1, "times_stream": 1.4}
    path = tmp_path / "records.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [*runs, gemm, {**gemm, "of_bound": 0.9}, gemv]) + "\n\n")
    assert main(["bench", "table", str(path), "--json"]) == 0
    cnn, product, weight_only = json.loads(capsys.readouterr().out)
    assert cnn["runs"] == 3 and cnn["qnnlab_ms"] == {"median": 11.0, "low": 10.0, "high": 12.0}
    # each run's weakest ratio among the int8 baselines: 2.0 (OpenVINO), 2.2 (ORT), 1.9 (ORT)
    assert cnn["vs_int8"] == {"median": 2.0, "low": 1.9, "high": 2.2, "by": ["openvino-int8", "ort-int8-static"]}
    assert cnn["vs_float32"]["median"] == 8.0 and cnn["qnnlab_alone_ms"]["median"] == 9.0
    assert product["runs"] == 2 and product["of_bound"]["median"] == 0.85 and "vs_int8" not in product
    assert weight_only["times_stream"]["median"] == 1.4 and "of_bound" not in weight_only
    assert main(["bench", "table", str(path)]) == 0
    table = capsys.readouterr().out
    machines = "AMD EPYC (znver4), int8 units: not recorded; Intel Xeon (sapphirerapids), int8 units: AMX"
    assert table.startswith(f"Measured on {machines}.\n")  # the int8 baselines' strength depends on them
    assert "| 0.850 (0.800-0.900) |" in table and "| 1.40 (1.40-1.40) |" in table
    assert "| model/cnn batch 100 | 2 | 3 | 11 / 9 | 2.00 (1.90-2.20, openvino-int8 / ort-int8-static) |" in table


def test_files_that_are_not_bench_records_are_refused_by_name(tmp_path, capsys):
    empty, text, foreign = tmp_path / "empty.jsonl", tmp_path / "log.txt", tmp_path / "other.jsonl"
    empty.write_text("")
    text.write_text("epoch 1 done\n")
    foreign.write_text('{"epoch": 1}\n')
    assert main(["bench", "table", str(empty)]) == 2
    assert "no rows" in capsys.readouterr().err
    assert main(["bench", "table", str(text)]) == 2
    assert "log.txt:1 is not a JSON row" in capsys.readouterr().err
    assert main(["bench", "table", str(foreign)]) == 2
    assert "other.jsonl:1 lacks name" in capsys.readouterr().err
    assert main(["bench", "table", str(tmp_path / "missing.jsonl")]) == 2
