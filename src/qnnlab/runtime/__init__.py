"""Packed-model files and their runtime: ``qnnlab export`` writes one, ``load`` runs it.

File: safetensors with the packed tensors and metadata ``format`` (qnnlab-packed), ``version``,
``ops`` (the flat op list, JSON), ``sha256`` (of the op list and every tensor's bytes, so a
tampered file is refused) and ``source`` (the training config). Loading executes no code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from qnnlab.runtime import ops as runtime_ops
from qnnlab.runtime.export import ExportError, export_model
from qnnlab.storage import atomic_write, read_safetensors, tensors_digest

FORMAT = "qnnlab-packed"
VERSION = 2  # 2: convolutions' padding corrections are no longer stored

__all__ = ["ExportError", "PackedModel", "export", "load"]


class PackedModel:
    """A callable running the op list with the packed kernels; ``reference(x)`` runs the same ops
    in plain PyTorch on unpacked values."""

    def __init__(self, ops: list[dict[str, Any]], tensors: dict[str, torch.Tensor], source: dict[str, Any]) -> None:
        self.ops, self.tensors, self.source = ops, tensors, source
        self.steps = [runtime_ops.build(op, tensors) for op in ops]  # built once, with what they derive

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, reference: bool = False) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point:
            raise ValueError(f"input must be a float tensor (B, ...), got {getattr(x, 'dtype', type(x).__name__)}")
        for step in self.steps:
            x = step.reference(x) if reference else step.packed(x)
        return x

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        return self(x, reference=True)


def export(
    model: torch.nn.Module,
    path: str | os.PathLike,
    source: dict[str, Any] | None = None,
    input_shape: tuple[int, ...] | None = None,
) -> None:
    """Write ``model`` (eval statistics) as a packed file, atomically; convolutional models need
    ``input_shape`` (C, H, W)."""
    ops, tensors = export_model(model, input_shape)
    ops_json = json.dumps(ops)
    metadata = {
        "format": FORMAT,
        "version": str(VERSION),
        "ops": ops_json,
        "sha256": tensors_digest(ops_json, tensors),
        "source": json.dumps(source or {}),
    }
    atomic_write(Path(path), lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def load(path: str | os.PathLike) -> PackedModel:
    """Open a packed model file; a truncated, tampered, foreign or newer file raises ValueError."""
    path = Path(path)
    tensors, metadata = read_safetensors(path, FORMAT, VERSION, "model file")
    if tensors_digest(metadata["ops"], tensors) != metadata.get("sha256"):
        raise ValueError(f"{path}: contents do not match the file's checksum; it was modified after export")
    return PackedModel(json.loads(metadata["ops"]), tensors, json.loads(metadata.get("source", "{}")))
