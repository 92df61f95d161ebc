"""Training: the loop over epochs (``trainer``), tasks (images, text) and update rules (backprop, EBP)."""

from qnnlab.run.config import TrainConfig, recipe_names, resolve
from qnnlab.train.trainer import RunExists, Trainer, TrainingDiverged

__all__ = ["RunExists", "TrainConfig", "Trainer", "TrainingDiverged", "recipe_names", "resolve"]
