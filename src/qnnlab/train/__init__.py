"""Training: configs and recipes, the trainer, checkpoints and evaluation modes."""

from qnnlab.train.config import TrainConfig, recipe_names, resolve
from qnnlab.train.trainer import RunExists, Trainer, TrainingDiverged

__all__ = ["RunExists", "TrainConfig", "Trainer", "TrainingDiverged", "recipe_names", "resolve"]
