"""``qnnlab demo``: the gains of quantized networks, shown on this machine in minutes, offline.

Trains the demo sweep (``studies/demo/recipes.yaml``: float, BinaryConnect, BNN, 2-bit QNN,
XNOR-Net, DoReFa, and the BNN without batch norm and with SGD) on the embedded Fashion-MNIST
subset, takes each recipe's training and inference energy from its record, exports the BNN to the
packed runtime and times it against the float model side by side, writes the report, and prints
one summary table.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

from qnnlab import runtime
from qnnlab.bench.model import side_by_side
from qnnlab.data.batches import eval_batches, to_unit_range
from qnnlab.report import build
from qnnlab.run import load_trained
from qnnlab.run.deploy import export_checkpoint
from qnnlab.storage import atomic_write
from qnnlab.sweep import find, run_sweep
from qnnlab.sweep.table import records
from qnnlab.timing import cpu_name

SWEEP = "demo/recipes"


def say(text: str) -> None:
    print(f"[demo] {text}", file=sys.stderr, flush=True)


def measure_speed(out: Path, repeats: int) -> dict[str, Any]:
    """The packed BNN against the float model of the same architecture, both trained, on test
    images at batch 1 and 100 (``bench.model.side_by_side``: torch float32 and dynamic int8 and,
    with the bench extra, ONNX Runtime and OpenVINO; int8 calibrated on training images).
    ``speedup_vs_int8`` is against the int8 deployment the BNN gains least against."""
    sizes = export_checkpoint(out / "bnn" / "seed0", out / "bnn.qnn")
    packed = runtime.load(out / "bnn.qnn")
    float_model, data, _ = load_trained(str(out / "float" / "seed0"))
    float_model.eval()
    x = next(eval_batches(data, 100))[0]
    speed = {"cpu": cpu_name(), "threads": torch.get_num_threads(), **sizes}
    inputs = {batch: x[:batch] for batch in (1, 100)}
    for batch, timing in side_by_side(packed, float_model, to_unit_range(data.train_x[:256]), inputs, repeats):
        int8 = min((name for name in timing.ratios if "int8" in name), key=timing.ratios.get)
        speed[f"batch{batch}"] = {
            "packed_ms": timing.packed_ms,
            "float_ms": timing.baseline_ms["torch-float32"],
            "speedup": timing.ratios["torch-float32"],
            "int8_baseline": int8,
            "int8_ms": timing.baseline_ms[int8],
            "speedup_vs_int8": timing.ratios[int8],
            "baselines": {name: {"ms": ms, "speedup": timing.ratios[name]} for name, ms in timing.baseline_ms.items()},
        }
    return speed


def summary(out: Path, speed: dict[str, Any]) -> str:
    rows = sorted(records(out), key=lambda r: r["configuration"] != "float")
    lines = [
        f"{'recipe':<14} {'test acc.':>9} {'train uJ/sample':>16} {'infer uJ (b1)':>13} {'weights KiB':>12} "
        f"{'speed-up b1/b100':>17}"
    ]
    for r in rows:
        costs = r["costs"]
        faster = (
            f"{speed['batch1']['speedup']:.1f}x / {speed['batch100']['speedup']:.1f}x"
            if r["configuration"] == "bnn"
            else ""
        )
        lines.append(
            f"{r['configuration']:<14} {100 * r['final']['test_accuracy']:>8.2f}% "
            f"{costs['train_step_pj_per_sample'] / 1e6:>16.2f} {costs['inference_pj'] / 1e6:>13.2f} "
            f"{costs['deployed_weight_bits'] / 8192:>12.1f} {faster:>17}"
        )
    lines.append(
        f"\nenergy: Horowitz 45 nm model (qnnlab analyze); speed-up: packed BNN against the float model "
        f"in torch, measured here ({speed['cpu']}, {speed['threads']} threads); the packed file is "
        f"{speed['ratio']:.1f}x smaller than the float32 weights; against the strongest int8 of the float model "
        f"({speed['batch1'].get('int8_baseline', 'torch-int8-dynamic')} / "
        f"{speed['batch100'].get('int8_baseline', 'torch-int8-dynamic')}): "
        f"{speed['batch1']['speedup_vs_int8']:.2f}x / {speed['batch100']['speedup_vs_int8']:.2f}x (batch 1 / 100)"
    )
    return "\n".join(lines)


def run_demo(out: str | Path, jobs: int = 2, repeats: int = 15) -> dict[str, Any]:
    out = Path(out)
    say(f"training 8 configurations of {find(SWEEP)} into {out} (resumable; rerun to continue)")
    counts = run_sweep(SWEEP, out, jobs=jobs)
    if counts.get("done", 0) != sum(counts.values()):
        raise ValueError(f"some demo runs did not finish ({counts}); see {out}/*/seed0/result.json")
    say("exporting the BNN to the packed runtime and timing it against the float model")
    speed = measure_speed(out, repeats)
    atomic_write(out / "speed.json", lambda p: p.write_text(json.dumps(speed, indent=1) + "\n"))
    say("writing the report")
    report = build([out], out / "report.html")
    print(summary(out, speed))
    print(f"\nreport: {report['html']} (and {report['markdown']})")
    return {"speed": speed, "report": report}
