"""Packed-model files and their runtime: ``qnnlab export`` writes one, ``load`` runs it.

File: safetensors with the packed tensors and metadata ``format`` (qnnlab-packed), ``version``,
``ops`` (the flat op list, JSON), ``input`` (the shape of one input and the value grid it was
trained on, JSON), ``sha256`` (of the op list and every tensor's bytes) and ``source`` (the
training config). Loading executes no code.

What is checked: the checksum tells a damaged or edited file from the one written, but it is
stored in the file, so it does not stop a forger who rewrites it too. What keeps a crafted file
from reading memory it should not is the shape check: at load every op's tables are checked
against the shapes the op list implies for the recorded input, and an input of another shape is
checked the same way before any kernel runs. At call, an input must be finite and, for a model
trained on 8-bit pixels, lie on that grid.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from qnnlab import kernels
from qnnlab.runtime import maps as _maps  # noqa: F401  (registers the ops on real feature maps)
from qnnlab.runtime import ops as runtime_ops
from qnnlab.runtime.export import ExportError, export_model
from qnnlab.runtime.fused import BATCH_LIMIT, ArrayStep, FusedCNN, FusedDense, FusedDenseBatch, packed_plan
from qnnlab.storage import atomic_write, read_safetensors, tensors_digest

FORMAT = "qnnlab-packed"
VERSION = 3  # 2: convolutions' padding corrections are no longer stored; 3: the input's shape and grid
PIXELS = "pixels"  # x = c / 127.5 - 1 for 8-bit codes c, as qnnlab's image loaders feed a model

__all__ = ["PIXELS", "ExportError", "PackedModel", "export", "load"]


def float32_values(x: torch.Tensor) -> np.ndarray:
    """The images x (B, ...) as a C-contiguous float32 array, x's own memory where it already is
    one, by one call into torch where it can (once a kernel has run, each read of a tensor's
    attributes costs microseconds: torch's code is out of the caches). Anything but a float
    tensor of images on the CPU raises ValueError."""
    values = None
    if isinstance(x, torch.Tensor):
        try:
            values = x.numpy()  # refuses tensors that need grad, off the CPU, or of dtypes numpy lacks
        except (TypeError, RuntimeError):
            pass
    if values is not None and values.dtype == np.float32 and values.ndim >= 2 and values.flags.c_contiguous:
        return values
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point or x.dim() < 2:
        got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"input must be a float tensor (B, ...) of images, got {got}")
    if x.device.type != "cpu":
        raise ValueError(f"the packed runtime runs on the CPU, got a tensor on {x.device}; move it with .cpu()")
    return x.detach().to(torch.float32).contiguous().numpy()


class PackedModel:
    """A callable running the op list with the packed kernels; ``reference(x)`` runs the same ops
    in plain PyTorch on unpacked values."""

    def __init__(
        self,
        ops: list[dict[str, Any]],
        tensors: dict[str, torch.Tensor],
        source: dict[str, Any],
        input_shape: tuple[int, ...] | None = None,
        input_grid: str | None = None,
    ) -> None:
        if not isinstance(ops, list) or not ops or not all(isinstance(op, dict) for op in ops):
            raise ValueError("the model file's op list is empty or malformed")
        self.ops, self.tensors, self.source = ops, tensors, source
        self.input_shape, self.input_grid = input_shape, input_grid
        self.steps = [runtime_ops.build(op, tensors) for op in ops]  # built once, with what they derive
        self._checked: dict[tuple[int, ...], tuple[int, ...]] = {}
        if input_shape is not None:
            self.output_shape(input_shape)
        self.plan = packed_plan(self.steps, input_grid == PIXELS)
        # the whole model in one kernel call, where inputs are checked to be on the grid (and the
        # tables against the input's shape, before the fused forms read them)
        on_grid = input_grid == PIXELS and input_shape is not None
        self.fused = (FusedDense.match(self.steps) or FusedCNN.match(self.plan, input_shape)) if on_grid else None
        self.fused_batch = FusedDenseBatch.match(self.steps, self.plan) if on_grid else None
        for step in self.steps:  # check_input has verified the grid: the first layer need not again
            if isinstance(step, runtime_ops.RealLinear):
                step.grid_checked = input_grid == PIXELS

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of one output for one input of ``shape``, every op's tables checked on the way."""
        if shape not in self._checked:
            out = shape
            for step in self.steps:
                out = step.out_shape(out)
            if len(out) != 1:
                raise ValueError(f"the model's last op hands on {out}, not a vector of logits")
            self._checked[shape] = out
        return self._checked[shape]

    def check_input(self, x: torch.Tensor) -> tuple[int, ...]:
        """The output shape for ``x``; an input of the wrong type, shape or values raises ValueError."""
        return self._checked_input(x)[1]

    def _checked_input(self, x: torch.Tensor) -> tuple[np.ndarray, tuple[int, ...]]:
        """x's values as a float32 array (``float32_values``) and the output shape, once
        ``check_input``'s checks pass: the fused forms take the array, so a call converts x once."""
        values = float32_values(x)
        shape = values.shape[1:]
        if (
            self.input_shape is not None
            and shape != self.input_shape
            and (len(self.input_shape) != 1 or math.prod(shape) != self.input_shape[0])
        ):
            raise ValueError(f"input images have shape {shape}; the model was exported for {self.input_shape}")
        if values.size and not self._values_fit(values):
            bad = int((~np.isfinite(values)).sum())
            if bad:
                raise ValueError(f"input holds {bad} NaN or infinite values; the packed runtime takes finite inputs")
            codes = (values.astype(np.float64) + 1) * 127.5
            off = (np.abs(codes - codes.round()) > 1e-3) | (codes < -1e-3) | (codes > 255 + 1e-3)
            raise ValueError(
                f"{int(off.sum())} input values (e.g. {float(values[off][0]):g}) are not on the 8-bit pixel grid the "
                f"model was trained on, x = c / 127.5 - 1 for c in 0..255; scale 0..255 pixels p as "
                f"p / 127.5 - 1 (qnnlab.data.batches.to_unit_range)"
            )
        one = shape if self.input_shape is None or len(self.input_shape) != 1 else self.input_shape
        return values, self.output_shape(one)

    def _values_fit(self, values: np.ndarray) -> bool:
        """Finite, and on the 8-bit pixel grid where the model was trained on it: one pass in float32
        (``kernels.on_pixel_grid``), the detail only when the check fails."""
        if self.input_grid != PIXELS:
            return bool(np.isfinite(values).all())
        return kernels.on_pixel_grid(values)

    def __call__(self, x: torch.Tensor, reference: bool = False) -> torch.Tensor:
        values, out_shape = self._checked_input(x)
        if len(values) == 0:
            return torch.zeros(0, *out_shape)
        if self.fused is not None and not reference and len(values) <= BATCH_LIMIT:
            return self.fused(values)
        if self.fused_batch is not None and not reference:
            return self.fused_batch(values)
        if reference:
            with torch.no_grad():
                for step in self.steps:
                    x = step.reference(x)
            return x
        if isinstance(self.plan[0], ArrayStep):
            x = values
        with torch.no_grad():
            for step in self.plan:  # arrays between array steps (``ArrayStep``), tensors into the ops
                x = step(x if isinstance(step, ArrayStep) or not isinstance(x, np.ndarray) else torch.from_numpy(x))
        return torch.from_numpy(x) if isinstance(x, np.ndarray) else x

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        return self(x, reference=True)


def export(
    model: torch.nn.Module,
    path: str | os.PathLike,
    source: dict[str, Any] | None = None,
    input_shape: tuple[int, ...] | None = None,
    input_grid: str | None = None,
) -> None:
    """Write ``model`` (eval statistics) as a packed file, atomically; convolutional models need
    ``input_shape`` (C, H, W). ``input_grid="pixels"`` records that the model was trained on 8-bit
    pixels x = c / 127.5 - 1, so the runtime refuses inputs off that grid."""
    if input_grid not in (None, PIXELS):
        raise ValueError(f"input_grid={input_grid!r}; known: None (any finite values) or {PIXELS!r}")
    ops, tensors = export_model(model, input_shape)
    if input_shape is None:
        first = next(op for op in ops if "k" in op or "channels" in op)
        input_shape = (first["k"],) if "k" in first else None
    ops_json = json.dumps(ops)
    inputs = json.dumps({"shape": list(input_shape) if input_shape else None, "grid": input_grid})
    metadata = {
        "format": FORMAT,
        "version": str(VERSION),
        "ops": ops_json,
        "input": inputs,
        "sha256": tensors_digest(ops_json + inputs, tensors),
        "source": json.dumps(source or {}),
    }
    atomic_write(Path(path), lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def load(path: str | os.PathLike) -> PackedModel:
    """Open a packed model file; a truncated, tampered, foreign or newer file raises ValueError."""
    path = Path(path)
    tensors, metadata = read_safetensors(path, FORMAT, VERSION, "model file")
    try:
        ops_json, inputs_json = metadata["ops"], metadata.get("input", "")
        if tensors_digest(ops_json + inputs_json, tensors) != metadata.get("sha256"):
            raise ValueError(f"{path}: contents do not match the file's checksum; it was modified after export")
        inputs = json.loads(inputs_json) if inputs_json else {}
        shape = inputs.get("shape")
        if shape is not None and not (
            isinstance(shape, list) and shape and all(type(n) is int and n >= 1 for n in shape)
        ):
            raise ValueError(f"input shape {shape!r} is not a list of positive integers")
        if inputs.get("grid") not in (None, PIXELS):
            raise ValueError(f"unknown input grid {inputs.get('grid')!r}")
        source = json.loads(metadata.get("source", "{}"))
        return PackedModel(json.loads(ops_json), tensors, source, tuple(shape) if shape else None, inputs.get("grid"))
    except (KeyError, TypeError, AttributeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"{path}: the model file's metadata is malformed ({type(exc).__name__}: {exc})") from None
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}" if str(path) not in str(exc) else str(exc)) from None
