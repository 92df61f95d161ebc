"""Checkpoints in safetensors, written atomically; loading executes no code.

A checkpoint holds the model state as tensors ``model/<name>`` and any nested state (optimizer,
schedule) as tensors ``<part>/<path>`` plus a JSON skeleton in the metadata, with the resolved
config, the epoch and the metrics so far.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from qnnlab.storage import atomic_write, read_safetensors, tensors_digest

FORMAT = "qnnlab-checkpoint"
VERSION = 1


def _flatten(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        return {
            "__dict__": [
                [_flatten(k, f"{prefix}/k{i}", tensors), _flatten(v, f"{prefix}/{i}", tensors)]
                for i, (k, v) in enumerate(obj.items())
            ]
        }
    if isinstance(obj, (list, tuple)):
        return {
            "__list__": [_flatten(v, f"{prefix}/{i}", tensors) for i, v in enumerate(obj)],
            "tuple": isinstance(obj, tuple),
        }
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} in a checkpoint")


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict) and "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if isinstance(obj, dict) and "__dict__" in obj:
        return {_unflatten(k, tensors): _unflatten(v, tensors) for k, v in obj["__dict__"]}
    if isinstance(obj, dict) and "__list__" in obj:
        items = [_unflatten(v, tensors) for v in obj["__list__"]]
        return tuple(items) if obj["tuple"] else items
    return obj


def save(path: Path, model_state: dict[str, torch.Tensor], extra: dict[str, Any], info: dict[str, Any]) -> None:
    tensors = {f"model/{k}": v.detach().cpu().contiguous().clone() for k, v in model_state.items()}
    skeleton = {name: _flatten(state, name, tensors) for name, state in extra.items()}
    text = json.dumps(skeleton) + json.dumps(info)
    metadata = {
        "format": FORMAT,
        "version": str(VERSION),
        "skeleton": json.dumps(skeleton),
        "info": json.dumps(info),
        "sha256": tensors_digest(text, tensors),
    }
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def load(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """(model state, extra states, info); a broken, foreign or newer file raises ValueError."""
    tensors, metadata = read_safetensors(Path(path), FORMAT, VERSION, "checkpoint")
    text = metadata.get("skeleton", "") + metadata.get("info", "")
    if "sha256" in metadata and tensors_digest(text, tensors) != metadata["sha256"]:  # older files carry none
        raise ValueError(
            f"checkpoint {path}: contents do not match its checksum; it was damaged or edited after "
            "it was written (resume from another copy, or train again)"
        )
    try:
        model_state = {k[len("model/") :]: v for k, v in tensors.items() if k.startswith("model/")}
        skeleton = json.loads(metadata["skeleton"])
        extra = {name: _unflatten(s, tensors) for name, s in skeleton.items()}
        return model_state, extra, json.loads(metadata["info"])
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as exc:
        raise ValueError(f"checkpoint {path}: its metadata is malformed ({type(exc).__name__}: {exc})") from None
