"""End-to-end inference: the packed BNN runtime against the float model of the same architecture
(``float`` recipe, eval mode, same thread count), on inputs on the 8-bit pixel grid."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from qnnlab import runtime
from qnnlab.run.config import resolve
from qnnlab.run.model import build_model
from qnnlab.timing import paired_ms


def run(
    model: str, batches: list[int], repeats: int = 9, shape: tuple[int, ...] = (1, 28, 28)
) -> Iterator[dict[str, Any]]:
    from qnnlab.data import ImageData

    data = ImageData.empty(shape, 10)
    torch.manual_seed(0)
    float_model = build_model(resolve("float", {"model": model}), data).eval()
    bnn = build_model(resolve("bnn", {"model": model}), data).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bnn.qnn"
        runtime.export(bnn, path, input_shape=shape)
        packed = runtime.load(path)
        packed_bytes = path.stat().st_size
    float_bytes = sum(p.numel() * 4 for p in float_model.state_dict().values() if p.dtype.is_floating_point)
    for batch in batches:
        x = torch.randint(0, 256, (batch, *shape)).float() / 127.5 - 1
        with torch.no_grad():
            q_ms, f_ms, speedup = paired_ms(lambda: packed(x), lambda: float_model(x), repeats)
        yield {
            "name": f"model/{model}",
            "shape": f"batch {batch}",
            "qnnlab_ms": round(q_ms, 4),
            "baseline_ms": round(f_ms, 4),
            "speedup": round(speedup, 2),
            "threads": torch.get_num_threads(),
            "packed_bytes": packed_bytes,
            "float32_bytes": float_bytes,
        }
