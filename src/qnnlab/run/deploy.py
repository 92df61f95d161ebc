"""A trained run as a packed model: export it, and check the export against the run on the test set."""

from __future__ import annotations

import os
from typing import Any

import torch

from qnnlab import runtime
from qnnlab.data.batches import eval_batches
from qnnlab.run.evaluate import weight_mode
from qnnlab.run.model import load_trained
from qnnlab.storage import tensors_digest


def export_checkpoint(checkpoint_path: str | os.PathLike, out: str | os.PathLike) -> dict[str, Any]:
    """Rebuild a run's model from its checkpoint and export it; returns sizes for the report."""
    model, data, info = load_trained(str(checkpoint_path), need_images=False)
    source = {"config": info["config"].to_dict(), "epoch": info["epoch"] + 1, "weights_sha256": _weights(model)}
    images = hasattr(data, "shape")
    runtime.export(model, out, source, data.shape if images else None, runtime.PIXELS if images else None)
    float_bytes = sum(v.numel() * 4 for v in model.state_dict().values() if v.dtype.is_floating_point)
    return {
        "out": str(out),
        "bytes": os.path.getsize(out),
        "float32_state_bytes": float_bytes,
        "ratio": float_bytes / os.path.getsize(out),
    }


def _weights(model: torch.nn.Module) -> str:
    """The digest of a model's trained state: which exact run an export came from."""
    return tensors_digest("", {k: v.detach() for k, v in model.state_dict().items()})


def _identity(config: dict[str, Any], epoch: Any) -> dict[str, Any]:
    """What names a trained model: its recipe, model, data set, rules and epoch."""
    return {**{k: config.get(k) for k in ("recipe", "model", "dataset", "rules")}, "epoch": epoch}


@torch.no_grad()
def compare_with_checkpoint(
    packed_path: str | os.PathLike, checkpoint_path: str | os.PathLike, data_root: str | None = None
) -> dict[str, Any]:
    """Run a packed file and the PyTorch model of its run on the whole test set: both accuracies
    and on how many images their predictions agree."""
    packed = runtime.load(packed_path)
    model, data, info = load_trained(str(checkpoint_path), data_root)
    if not hasattr(data, "test_y"):
        raise ValueError(f"{checkpoint_path} is a language model; the packed runtime runs image classifiers")
    exported = _identity(packed.source.get("config", {}), packed.source.get("epoch"))
    trained = _identity(info["config"].to_dict(), info["epoch"] + 1)
    if exported != trained:
        raise ValueError(
            f"{packed_path} was exported from {exported['recipe']} {exported['model']} epoch "
            f"{exported['epoch']}, not from this checkpoint ({trained['recipe']} {trained['model']} "
            f"epoch {trained['epoch']}); re-export it with qnnlab export"
        )
    if packed.source.get("weights_sha256") not in (None, _weights(model)):  # exports before it had none
        raise ValueError(
            f"{packed_path} was exported from another run of the same config (its weights differ, e.g. another "
            f"seed), not from this checkpoint; re-export it with qnnlab export"
        )
    model.eval()
    agree = right_packed = right_model = 0
    with weight_mode(model, "binary"):  # the weights the export packed: stochastic ones at their sign
        for x, y in eval_batches(data):
            ours, theirs = packed(x).argmax(1), model(x).argmax(1)
            agree += int((ours == theirs).sum())
            right_packed += int((ours == y).sum())
            right_model += int((theirs == y).sum())
    n = len(data.test_y)
    return {
        "packed": str(packed_path),
        "checkpoint": info["checkpoint"],
        "images": n,
        "packed_accuracy": right_packed / n,
        "model_accuracy": right_model / n,
        "agreeing_predictions": agree,
    }
