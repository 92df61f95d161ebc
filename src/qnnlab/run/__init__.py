"""A run: config -> model -> checkpoint. Configs and recipes (``config``), the checkpoint format
(``checkpoint``), building and reloading a run's model (``model``), evaluation modes
(``evaluate``) and packed exports of a run (``deploy``)."""

from qnnlab.run.config import TrainConfig, recipe_names, resolve
from qnnlab.run.model import CHECKPOINT, METRICS, build_model, initial_model, load_trained

__all__ = [
    "CHECKPOINT",
    "METRICS",
    "TrainConfig",
    "build_model",
    "initial_model",
    "load_trained",
    "recipe_names",
    "resolve",
]
