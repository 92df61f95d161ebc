"""Training configuration: every field with its default, unit and meaning; recipes are YAML files.

Resolution order: defaults <- the recipe it inherits from <- the recipe <- overrides (``--set
key=value`` and the CLI flags). The resolved config is written next to the run.
"""

from __future__ import annotations

import dataclasses
import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from qnnlab.data.batches import augmentation
from qnnlab.data.errors import DatasetError
from qnnlab.models.blocks import ACTIVATIONS, NORMS

RECIPE_DIR = "recipes"


class YAMLLoader(yaml.SafeLoader):
    """Safe YAML (no tags that run code) that reads ``1e-3`` as a float, as users write it: YAML 1.1
    wants a dot in the mantissa and a sign in the exponent (``1.0e-3``) and reads ``1e-3`` as text."""


YAMLLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=YAMLLoader)  # noqa: S506 - a SafeLoader subclass


@dataclasses.dataclass
class TrainConfig:
    recipe: str = "float"
    description: str = ""
    model: str = "mlp"
    model_options: dict = dataclasses.field(default_factory=dict)
    dataset: str = "fashion-mnist-mini"
    data_root: str | None = None
    image_size: int = 224
    epochs: int = 25
    batch_size: int = 100
    algorithm: str = "backprop"
    optimizer: str = "adam"
    lr: float = 1e-3
    schedule: str = "cosine"
    final_lr_fraction: float = 0.0
    momentum: float = 0.9
    betas: list = dataclasses.field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    lr_scale: str = "none"
    clip_latent: float | None = None
    latent_quantizer: str | None = None
    bop_gamma: float = 1e-4
    bop_threshold: float = 1e-8
    loss: str = "cross_entropy"
    norm: str = "bn"
    activation: str = "relu"
    output_norm: bool = False
    rules: list = dataclasses.field(default_factory=list)
    init: str = "default"
    init_from: str | None = None
    distill_from: str | None = None
    distill_weight: float = 0.5
    distill_temperature: float = 1.0
    allow_degenerate: bool = False
    augment: str = "none"
    channels_last: bool = True
    eval_mode: str = "binary"
    seq_len: int = 100
    limit_steps: int = 0
    grad_clip: float = 0.0
    seed: int = 0
    device: str = "cpu"
    threads: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS: dict[str, tuple[str, str]] = {
    "recipe": ("name", "the recipe this config came from"),
    "description": ("text", "what the recipe reproduces, with its paper"),
    "model": ("name", "architecture (qnnlab models)"),
    "model_options": ("mapping", "architecture arguments, e.g. {widths: [2048, 2048, 2048]}"),
    "dataset": ("name", "data set (qnnlab datasets)"),
    "data_root": ("path", "folder holding the data set's files; default: cache, system folders, download"),
    "image_size": ("pixels", "imagefolder images: shorter side resized to this, then centre-cropped square"),
    "epochs": ("epochs", "passes over the training set"),
    "batch_size": ("samples", "samples per step (for language models: sequences per step)"),
    "algorithm": ("name", "backprop, or ebp (Expectation Backpropagation: binary-weight MLPs, no optimizer)"),
    "optimizer": ("name", "sgd, adam, shift_adamax (QNN paper) or bop (latent-free)"),
    "lr": ("per step", "learning rate at the start"),
    "schedule": ("name", "constant, cosine (per step, to final_lr_fraction) or exponential (per epoch)"),
    "final_lr_fraction": ("fraction", "learning rate at the end as a fraction of lr"),
    "momentum": ("coefficient", "SGD momentum"),
    "betas": ("coefficients", "Adam / AdaMax moment decay rates"),
    "weight_decay": ("per step", "L2 coefficient"),
    "lr_scale": ("name", "none, or glorot: per-layer lr * 1/sqrt(1.5/(fan_in+fan_out)) (BinaryConnect)"),
    "clip_latent": ("weight units", "clip latent binary/ternary weights to [-c, c] after each step; null: off"),
    "latent_quantizer": ("spec", "quantize latent weights after each update (separate update precision)"),
    "bop_gamma": ("coefficient", "Bop adaptivity rate"),
    "bop_threshold": ("gradient units", "Bop flip threshold"),
    "loss": ("name", "cross_entropy or squared_hinge (L2-SVM output, BinaryConnect/BNN)"),
    "norm": ("name", "bn, shift (shift-based batch norm) or none"),
    "activation": (
        "name",
        "relu, hardtanh, identity (binary nets: sign is the next layer's input quantizer) or rprelu (learned "
        "shifts and slopes per channel before that sign, ReActNet)",
    ),
    "output_norm": ("flag", "batch norm on the classifier output (BNN)"),
    "rules": (
        "list",
        "quantization rules (qnnlab.nn.quantize_model): match, weight, input, grad, update_input, state, keep",
    ),
    "init": (
        "name",
        "default (PyTorch's: uniform, bound 1/sqrt(fan_in)) or glorot (uniform, bound sqrt(6/(fan_in+fan_out)), "
        "zero biases: BinaryConnect's and BNN's), for Linear and Conv layers",
    ),
    "init_from": (
        "path",
        "a run folder or checkpoint whose weights start this run (a trained float model, say); in a sweep "
        "file {sweep} is the sweep's folder and {seed} the run's seed",
    ),
    "distill_from": (
        "path",
        "a trained run (a float model, say) whose softened outputs the run also learns from (Hinton et al. "
        "2015 knowledge distillation); null: off",
    ),
    "distill_weight": ("fraction", "share of the distillation term in the loss: (1 - w) task loss + w T^2 KL"),
    "distill_temperature": ("temperature", "softmax temperature T of teacher and student in the distillation term"),
    "allow_degenerate": (
        "flag",
        "train even when a quantizer's output is constant on the first batch or a layer gets no gradient",
    ),
    "augment": (
        "name",
        "none, flip (random horizontal flips), shift:N (random moves of up to N pixels each way; shift: 2) "
        "or both joined by +, e.g. flip+shift:1",
    ),
    "channels_last": (
        "flag",
        "train on images in channels-last (NHWC) memory layout: the same model, "
        "about 1.2x faster convolution training steps on CPU (qnnlab bench layout)",
    ),
    "eval_mode": ("name", "how test accuracy is measured: binary, latent or ensemble:N"),
    "seq_len": ("tokens", "language models: truncated back-propagation length"),
    "limit_steps": ("steps", "stop each epoch after this many steps (quick trials); 0: whole epoch"),
    "grad_clip": ("gradient norm", "clip the global gradient norm; 0: off"),
    "seed": ("integer", "seeds data order, initialisation and sampling"),
    "device": ("name", "cpu or cuda"),
    "threads": ("threads", "torch CPU threads; 0: torch's default"),
}


def recipe_names() -> list[str]:
    folder = resources.files("qnnlab") / RECIPE_DIR
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def recipe_values(name_or_path: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """A recipe's own values merged over those it inherits (not yet checked or defaulted)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise DatasetError(f"recipe file {path} does not exist")
        text, label = path.read_text(), str(path)
    else:
        if name_or_path not in recipe_names():
            raise ValueError(f"unknown recipe {name_or_path!r}; known: {', '.join(recipe_names())} (or a .yaml file)")
        text = (resources.files("qnnlab") / RECIPE_DIR / f"{name_or_path}.yaml").read_text()
        label = name_or_path
    try:
        values = load_yaml(text) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"recipe {label}: not valid YAML ({exc})") from None
    if not isinstance(values, dict):
        raise ValueError(f"recipe {label}: must be a mapping of field: value")
    parent = values.pop("inherit", None)
    own_name = values.pop("recipe", None) or (path.stem if path.suffix else name_or_path)
    if parent is not None and not isinstance(parent, str):
        raise ValueError(f"recipe {label}: inherit: {parent!r} must be one recipe name or .yaml file")
    if parent:
        if parent in seen:
            raise ValueError(f"recipe {label}: inheritance loop through {parent!r}")
        values = {**recipe_values(parent, seen + (label,)), **values}
    values["recipe"] = own_name
    return values


def resolve(recipe: str, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The full config of ``recipe`` (a name or a .yaml path) with ``overrides`` applied and checked;
    ``model_options`` merge key by key (a recipe's Bi-Real shortcut survives a caller's widths)."""
    values = recipe_values(recipe)
    overrides = dict(overrides or {})
    if isinstance(values.get("model_options"), dict) and isinstance(overrides.get("model_options"), dict):
        overrides["model_options"] = {**values["model_options"], **overrides["model_options"]}
    return from_dict({**values, **overrides}, source=f"recipe {recipe}")


def from_dict(values: dict[str, Any], source: str = "config") -> TrainConfig:
    defaults = TrainConfig()
    unknown = set(values) - set(FIELDS)
    if unknown:
        raise ValueError(f"{source}: unknown field(s) {sorted(unknown)}; fields: {', '.join(FIELDS)}")
    checked = {}
    for key, value in values.items():
        default = getattr(defaults, key)
        if value is not None and default is not None and not _fits(value, default):
            raise ValueError(f"{source}: {key}={value!r} should be a {type(default).__name__} ({FIELDS[key][1]})")
        checked[key] = float(value) if isinstance(default, float) and isinstance(value, int) else value
    config = TrainConfig(**{**defaults.to_dict(), **checked})
    for key, choices in CHOICES.items():
        if getattr(config, key) not in choices:
            raise ValueError(f"{source}: {key}={getattr(config, key)!r}; choose one of {', '.join(choices)}")
    for key in POSITIVE:
        if not getattr(config, key) > 0:
            raise ValueError(f"{source}: {key}={getattr(config, key)!r} must be > 0 ({FIELDS[key][1]})")
    for key in NON_NEGATIVE:
        if not getattr(config, key) >= 0:
            raise ValueError(f"{source}: {key}={getattr(config, key)!r} must be >= 0 ({FIELDS[key][1]})")
    if not 0 <= config.distill_weight <= 1:
        raise ValueError(f"{source}: distill_weight={config.distill_weight!r} must be in [0, 1]")
    try:
        augmentation(config.augment)
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from None
    return config


CHOICES = {  # fields with a fixed set of values; models, data sets and recipes are checked where they are looked up
    "algorithm": ("backprop", "ebp"),
    "optimizer": ("sgd", "adam", "shift_adamax", "bop"),
    "schedule": ("constant", "cosine", "exponential"),
    "lr_scale": ("none", "glorot"),
    "loss": ("cross_entropy", "squared_hinge"),
    "norm": NORMS,
    "activation": ACTIVATIONS,
    "init": ("default", "glorot"),
}
POSITIVE = ("epochs", "batch_size", "lr", "seq_len", "image_size", "distill_temperature")
NON_NEGATIVE = ("final_lr_fraction", "momentum", "weight_decay", "grad_clip", "limit_steps", "threads", "seed")


def _fits(value: Any, default: Any) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, (int, float)):  # a bool is an int to Python, not to a user: epochs=true is a mistake
        return isinstance(value, (int, float) if isinstance(default, float) else int) and not isinstance(value, bool)
    return isinstance(value, type(default))


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` strings, the value read as YAML (``lr=0.01``, ``rules=[{weight: sign}]``)."""
    result = {}
    for pair in pairs:
        key, eq, text = pair.partition("=")
        if not eq or not key:
            raise ValueError(f"override {pair!r} must look like key=value")
        try:
            result[key.strip()] = load_yaml(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"override {pair!r}: value is not valid YAML ({exc})") from None
    return result
