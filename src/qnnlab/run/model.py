"""A run's model: built from its config (``build_model``), drawn from its seed (``initial_model``),
and rebuilt with its trained weights from a checkpoint or run folder (``load_trained``).

Every command that needs a run's model comes here: train, eval, analyze, export, bench, sweep.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from qnnlab import data as datasets
from qnnlab import models
from qnnlab.run import checkpoint
from qnnlab.run.config import TrainConfig, from_dict

CHECKPOINT = "checkpoint.safetensors"
METRICS = "metrics.jsonl"


def build_model(config: TrainConfig, data: datasets.ImageData | datasets.TextData) -> nn.Module:
    if config.algorithm == "ebp":
        if isinstance(data, datasets.TextData):
            raise ValueError("algorithm=ebp trains binary-weight MLPs on images, not language models")
        return models.build_ebp(config.model, shape=data.shape, classes=data.classes, **config.model_options)
    if config.algorithm != "backprop":
        raise ValueError(f"algorithm={config.algorithm!r}; use backprop or ebp")
    common = dict(
        norm=config.norm,
        activation=config.activation,
        output_norm=config.output_norm,
        rules=config.rules,
        **config.model_options,
    )
    if isinstance(data, datasets.TextData):
        return models.build(config.model, vocab=data.vocab_size, rules=config.rules, **config.model_options)
    return models.build(config.model, shape=data.shape, classes=data.classes, **common)


def initial_model(config: TrainConfig, data: datasets.ImageData | datasets.TextData) -> nn.Module:
    """The model as training starts, drawn from ``config.seed`` (a run's config redraws it), with
    the weights of ``config.init_from`` where it has them."""
    torch.manual_seed(config.seed)
    model = build_model(config, data)
    if config.init == "glorot":
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
    if config.init_from:
        start_from(model, config.init_from)
    return model


def start_from(model: nn.Module, path: str) -> list[str]:
    """Copy the tensors of a trained run into ``model`` wherever their names match (a float model's
    weights and batch-norm statistics into its quantized version: layers keep their names); returns
    what was copied. Tensors only ``model`` has (an output batch norm, quantizer state) keep their
    initial values; a name that matches with another shape is an error."""
    file = checkpoint_file(path)
    if not file.is_file():
        raise ValueError(f"init_from={path!r}: no checkpoint there; train that run first or fix the path")
    state = checkpoint.load(file)[0]
    own = model.state_dict()
    wrong = [
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    if wrong:
        raise ValueError(f"init_from={path!r}: tensors of other shapes ({'; '.join(wrong[:3])}): another architecture")
    copied = [k for k in state if k in own]
    if not any(k.endswith("weight") for k in copied):
        raise ValueError(f"init_from={path!r}: none of its weights fits this model (another architecture?)")
    model.load_state_dict({k: state[k] for k in copied}, strict=False)
    return copied


def checkpoint_file(path: str | Path) -> Path:
    """The checkpoint of a run folder, or the file itself."""
    path = Path(path)
    if not path.is_dir():
        return path
    if not (path / CHECKPOINT).is_file():
        raise ValueError(
            f"{path} is a folder without {CHECKPOINT}: not a run folder, or its run has not finished an epoch"
        )
    return path / CHECKPOINT


def load_trained(
    path: str, data_root: str | None = None, need_images: bool = True
) -> tuple[nn.Module, Any, dict[str, Any]]:
    """(model, data, info) of a checkpoint or run folder: the model rebuilt from its saved config
    with the trained weights, and its data set. With ``need_images=False`` an image classifier's
    checkpoint that records its input shape is rebuilt without loading the data set (the data
    returned then holds no images)."""
    file = checkpoint_file(path)
    model_state, _, info = checkpoint.load(file)
    config = from_dict(info["config"], source=str(file))
    if not need_images and "image_shape" in info:
        data = datasets.ImageData.empty(tuple(info["image_shape"]), info["classes"], config.dataset)
    else:
        data = datasets.load(config.dataset, data_root or config.data_root, image_size=config.image_size)
    model = build_model(config, data)
    try:
        model.load_state_dict(model_state)
    except RuntimeError as error:
        first = str(error).splitlines()[-1].strip().rstrip(".")
        raise ValueError(
            f"{file}: the weights do not fit the model its config builds ({first}); the file was "
            "edited, or the data set found is not the one it was trained on (check --data-root)"
        ) from None
    return model, data, {**info, "checkpoint": str(file), "config": config}
