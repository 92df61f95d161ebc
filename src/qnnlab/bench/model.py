"""End-to-end inference: the packed BNN runtime against the float model of the same architecture
(``float`` recipe, eval mode, same thread count) in torch float32, in torch's dynamic int8 (its
Linear layers quantized per tensor, as a user would deploy it in-process) and, with the ``bench``
extra, in ONNX Runtime float32 and static int8 (``qnnlab.bench.onnx``), timed in interleaved
rounds on inputs on the 8-bit pixel grid, and in OpenVINO float32 and int8, timed back to back in
a process of their own right after (``timed_apart``: its spinning workers would slow the others),
their ratios taken against the packed model timed back to back too, just before and just after
(``qnnlab_alone_ms``, the mean of the two medians: the host's speed drifts over seconds).
``baseline_ms`` and ``speedup`` are against the strongest baseline (the smallest speed-up); each
baseline's own figures are in ``baselines``; ``missing`` says which could not run."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import multiprocessing
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from qnnlab import kernels, runtime
from qnnlab.bench import onnx
from qnnlab.run.config import resolve
from qnnlab.run.model import build_model
from qnnlab.timing import interleaved_ms, median_ms, versus


def int8_dynamic(model: torch.nn.Module) -> torch.nn.Module:
    """The float model with its Linear layers in torch's dynamic int8 (weights int8 per tensor,
    activations quantized per call), the in-process int8 a torch user would deploy."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.ao.quantization is marked for removal
        warnings.simplefilter("ignore", UserWarning)
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)


def _spin() -> None:
    while True:
        pass


@contextlib.contextmanager
def busy_core(enabled: bool) -> Iterator[None]:
    """A second process keeping one core busy while the models are timed: a user's program runs
    beside other work, where spinning thread pools fighting for the cores can cost 100x."""
    if not enabled:
        yield
        return
    process = multiprocessing.get_context("spawn").Process(target=_spin, daemon=True)
    process.start()
    try:
        yield
    finally:
        process.terminate()
        process.join()


def run(
    model: str,
    batches: list[int],
    repeats: int = 9,
    shape: tuple[int, ...] = (1, 28, 28),
    busy: bool = False,
    recipe: str = "bnn",
) -> Iterator[dict[str, Any]]:
    from qnnlab.data import ImageData

    data = ImageData.empty(shape, 10)
    torch.manual_seed(0)
    float_model = build_model(resolve("float", {"model": model}), data).eval()
    bnn = build_model(resolve(recipe, {"model": model}), data).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bnn.qnn"
        runtime.export(bnn, path, input_shape=shape, input_grid=runtime.PIXELS)
        packed = runtime.load(path)
        packed_bytes = path.stat().st_size
    float_bytes = sum(p.numel() * 4 for p in float_model.state_dict().values() if p.dtype.is_floating_point)
    calibration = torch.randint(0, 256, (64, *shape)).float() / 127.5 - 1
    inputs = {batch: torch.randint(0, 256, (batch, *shape)).float() / 127.5 - 1 for batch in batches}
    missing = None if onnx.available() else onnx.INSTALL
    for batch, timing in side_by_side(packed, float_model, calibration, inputs, repeats, busy):
        yield {
            "name": f"model/{model}" + ("" if recipe == "bnn" else f"/{recipe}"),
            "shape": f"batch {batch}",
            **versus(timing.packed_ms, timing.baseline_ms, timing.ratios),
            "threads": torch.get_num_threads(),
            "qnnlab_threads": timing.threads,
            "beside_a_busy_process": busy,
            **({"timed_apart": timing.apart, "qnnlab_alone_ms": round(timing.alone_ms, 4)} if timing.apart else {}),
            **({"missing": missing} if missing else {}),
            "packed_bytes": packed_bytes,
            "float32_bytes": float_bytes,
        }


@dataclasses.dataclass
class Timing:
    packed_ms: float  # median, interleaved with the in-process baselines
    baseline_ms: dict[str, float]
    ratios: dict[str, float]  # per baseline: its time over the packed model's
    apart: list[str]  # baselines timed in a process of their own (OpenVINO), against alone_ms
    alone_ms: float | None  # the packed model timed back to back, before and after those (mean of the medians)
    threads: int  # the packed model's parallel kernels at the end of its timing (fewer than torch's beside busy cores)


def side_by_side(
    packed: Any,
    float_model: torch.nn.Module,
    calibration: torch.Tensor,
    inputs: dict[int, torch.Tensor],
    repeats: int,
    busy: bool = False,
) -> Iterator[tuple[int, Timing]]:
    """The packed model against the float model in torch float32 and dynamic int8 and, with the
    bench extra, ONNX Runtime float32 and static int8 (calibrated on ``calibration``) in
    interleaved rounds, and OpenVINO float32 and int8 apart; one ``Timing`` per batch of ``inputs``."""
    baselines = {"torch-float32": float_model, "torch-int8-dynamic": int8_dynamic(float_model)}
    with tempfile.TemporaryDirectory() as onnx_files:
        if onnx.available():
            baselines.update(onnx.sessions(float_model, calibration, torch.get_num_threads(), Path(onnx_files)))
        for batch, x in inputs.items():
            with torch.no_grad(), busy_core(busy):
                q_ms, base_ms, ratios = interleaved_ms(
                    lambda: packed(x), {name: lambda m=m: m(x) for name, m in baselines.items()}, repeats
                )
                apart, alone_ms = {}, None
                if onnx.available():  # the packed model alone just before and just after: drift averages out
                    before = median_ms(lambda: packed(x), repeats, warmup=3)
                    apart = onnx.openvino_ms(Path(onnx_files), x, torch.get_num_threads(), repeats)
                    alone_ms = (before + median_ms(lambda: packed(x), repeats, warmup=3)) / 2 if apart else None
                threads = kernels.parallel_threads()
            base_ms.update(apart)
            ratios.update({name: ms / alone_ms for name, ms in apart.items()})
            yield batch, Timing(q_ms, base_ms, ratios, sorted(apart), alone_ms, threads)
