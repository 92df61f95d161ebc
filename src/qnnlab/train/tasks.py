"""Tasks: what a run learns from its data. Each gives the batches of an epoch, the per-sample loss
of a forward pass, the epoch's statistics and the evaluation; the trainer calls them and knows
neither images nor text.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from qnnlab.data import ImageData, TextData
from qnnlab.data.batches import image_batches, lm_batches, model_layout
from qnnlab.nn import SquaredHingeLoss
from qnnlab.run.config import TrainConfig
from qnnlab.run.evaluate import evaluate_images, evaluate_text
from qnnlab.run.model import load_trained

Batch = tuple[torch.Tensor, torch.Tensor]


class ImageClassification:
    """Images -> class scores; loss cross-entropy or squared hinge (L2-SVM); metric test accuracy."""

    def __init__(self, config: TrainConfig, data: ImageData) -> None:
        if len(data.test_y) == 0:
            raise ValueError(f"data set {data.name} has no test images: every epoch ends with a test, so give it some")
        self.config, self.data = config, data
        self.criterion = SquaredHingeLoss("none") if config.loss == "squared_hinge" else None
        self.teacher = _teacher(config, data) if config.distill_from else None

    def steps_per_epoch(self) -> int:
        return len(self.data.train_y) // self.config.batch_size

    def batches(self, epoch: int, rank: int, world: int) -> Iterator[Batch]:
        c = self.config
        for x, y in image_batches(
            self.data.train_x, self.data.train_y, c.batch_size, c.seed, epoch, c.augment, rank, world
        ):
            yield model_layout(x.to(c.device), c.channels_last), y.to(c.device)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-sample loss (so score-function estimators can credit each sample)."""
        if self.criterion is not None:
            return self.criterion(output, target)
        return F.cross_entropy(output, target, reduction="none")

    def forward(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, state: Any) -> tuple[torch.Tensor, int, Any]:
        """(per-sample loss, correct predictions, state carried to the next batch)."""
        logits = model(x)
        loss = self.loss(logits, y)
        if self.teacher is not None:
            loss = (1 - self.config.distill_weight) * loss + self.config.distill_weight * self._distillation(logits, x)
        return loss, int((logits.argmax(1) == y).sum()), None

    def _distillation(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """T^2 KL(softmax(teacher / T) || softmax(student / T)) per sample (Hinton et al. 2015)."""
        t = self.config.distill_temperature
        with torch.no_grad():
            target = F.log_softmax(self.teacher(x) / t, dim=1)
        return F.kl_div(F.log_softmax(logits / t, dim=1), target, reduction="none", log_target=True).sum(1) * t * t

    def weight(self, y: torch.Tensor) -> int:
        return len(y)  # the epoch's loss is a mean over samples

    def progress(self, mean_loss: float, accuracy: float, per_second: float) -> dict[str, str]:
        return {"loss": f"{mean_loss:.4f}", "acc": f"{accuracy:.4f}", "img_s": f"{per_second:.0f}"}

    def epoch_stats(self, mean_loss: float, accuracy: float) -> dict[str, float]:
        """What the epoch's record adds to train_loss and lr."""
        return {"train_accuracy": accuracy}

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        return evaluate_images(model, self.data, self.config.eval_mode, self.config.device)

    def score(self, record: dict[str, Any]) -> float:
        """Higher is better: which epoch's checkpoint is kept as the best."""
        return record["test_accuracy"]

    def checkpoint_info(self) -> dict[str, Any]:
        """Lets ``qnnlab export`` rebuild the model without the data set."""
        return {"image_shape": list(self.data.shape), "classes": self.data.classes}


class LanguageModelling:
    """Next-token prediction with truncated back-propagation through time; metric bits per token."""

    def __init__(self, config: TrainConfig, data: TextData) -> None:
        if config.distill_from:
            raise ValueError("distill_from: distillation is implemented for image classification, not language models")
        self.config, self.data = config, data

    def steps_per_epoch(self) -> int:
        rows = len(self.data.train) // self.config.batch_size
        return max(1, math.ceil((rows - 1) / self.config.seq_len)) if rows else 0

    def batches(self, epoch: int, rank: int, world: int) -> Iterator[Batch]:
        c = self.config
        for x, y in lm_batches(self.data.train, c.batch_size, c.seq_len, rank, world):
            yield x.to(c.device), y.to(c.device)

    def forward(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, state: Any) -> tuple[torch.Tensor, int, Any]:
        logits, state = model(x, _detached(state))
        per_token = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none")
        return per_token, 0, state

    def weight(self, y: torch.Tensor) -> int:
        return 1  # the epoch's loss is a mean over steps

    def progress(self, mean_loss: float, accuracy: float, per_second: float) -> dict[str, str]:
        return {"bpc": f"{mean_loss / math.log(2):.3f}"}

    def epoch_stats(self, mean_loss: float, accuracy: float) -> dict[str, float]:
        return {"train_bpc": mean_loss / math.log(2)}

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        return evaluate_text(model, self.data, "valid", self.config.eval_mode, self.config.device)

    def score(self, record: dict[str, Any]) -> float:
        return -record["val_bpc"]

    def checkpoint_info(self) -> dict[str, Any]:
        return {}


def _detached(state: Any) -> Any:
    """Truncated back-propagation: the state carries values, not the graph, into the next window."""
    if state is None:
        return None
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


def _teacher(config: TrainConfig, data: ImageData) -> nn.Module:
    """The trained model of ``distill_from``, frozen in eval mode, checked to fit the run's data."""
    teacher, _, info = load_trained(config.distill_from, need_images=False)
    if (
        tuple(info.get("image_shape", data.shape)) != tuple(data.shape)
        or info.get("classes", data.classes) != data.classes
    ):
        raise ValueError(
            f"distill_from={config.distill_from}: the teacher was trained on {info.get('image_shape')} images of "
            f"{info.get('classes')} classes, this run has {list(data.shape)} and {data.classes}"
        )
    teacher.eval().requires_grad_(False)
    return teacher.to(config.device)


def task_for(config: TrainConfig, data: ImageData | TextData) -> ImageClassification | LanguageModelling:
    return LanguageModelling(config, data) if isinstance(data, TextData) else ImageClassification(config, data)
