"""Models by name; every one is a float architecture turned into a QNN by quantization rules."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from qnnlab.models.ebp import EBPNetwork
from qnnlab.models.language import RNNLanguageModel
from qnnlab.models.vision import alexnet, mlp, resnet18, small_cnn, vgg_cifar
from qnnlab.nn import quantize_model

VISION: dict[str, tuple[Callable[..., nn.Module], dict[str, Any], str]] = {
    "mlp": (mlp, {"widths": (2048, 2048, 2048)}, "MLP, 3 hidden layers of 2048 (widths configurable)"),
    "mlp-bnn": (mlp, {"widths": (4096, 4096, 4096)}, "BNN paper MNIST MLP, 3x4096"),
    "mlp-bc": (mlp, {"widths": (1024, 1024, 1024)}, "BinaryConnect MNIST MLP, 3x1024"),
    "mlp-small": (mlp, {"widths": (256, 256)}, "2x256 MLP for quick runs and tests"),
    "cnn": (small_cnn, {}, "64C3-64C3-MP2-128C3-128C3-MP2-256C3-256C3-MP2-512FC for 28x28"),
    "vgg-cifar": (vgg_cifar, {}, "BinaryConnect/BinaryNet CIFAR net 2x128C3-MP2-2x256C3-MP2-2x512C3-MP2-2x1024FC"),
    "alexnet": (alexnet, {}, "AlexNet with batch norm, ImageNet-size inputs"),
    "resnet18": (resnet18, {}, "ResNet-18, ImageNet-size inputs"),
}
LANGUAGE = {"lstm-lm": "lstm", "gru-lm": "gru"}


def available() -> list[str]:
    return sorted([*VISION, *LANGUAGE])


def describe(name: str) -> str:
    return VISION[name][2] if name in VISION else f"{LANGUAGE[name].upper()} language model (embedding, RNN, decoder)"


def build(
    name: str,
    *,
    shape: Sequence[int] | None = None,
    classes: int | None = None,
    vocab: int | None = None,
    norm: str = "bn",
    activation: str = "relu",
    output_norm: bool = False,
    rules: Sequence[dict[str, Any]] | None = None,
    **options: Any,
) -> nn.Module:
    """Build model ``name`` for the data's input ``shape`` and ``classes`` (or ``vocab`` for a language
    model), then quantize it by ``rules`` (see ``qnnlab.nn.quantize_model``)."""
    if name in VISION:
        if shape is None or classes is None:
            raise ValueError(f"model {name!r} needs an image data set (input shape and classes)")
        builder, defaults, _ = VISION[name]
        try:
            model = builder(
                shape, classes, norm_kind=norm, act=activation, output_norm=output_norm, **{**defaults, **options}
            )
        except TypeError as exc:
            raise ValueError(f"model {name!r}: bad option ({exc})") from None
    elif name in LANGUAGE:
        if vocab is None:
            raise ValueError(f"model {name!r} needs a text data set (a vocabulary)")
        try:
            model = RNNLanguageModel(vocab, LANGUAGE[name], **options)
        except TypeError as exc:
            raise ValueError(f"model {name!r}: bad option ({exc})") from None
    else:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(available())}")
    return quantize_model(model, list(rules)) if rules else model


def build_ebp(name: str, *, shape: Sequence[int], classes: int, **options: Any) -> EBPNetwork:
    """Expectation Backpropagation's binary-weight network with the layer widths of MLP ``name``."""
    if name not in VISION or VISION[name][0] is not mlp:
        mlps = ", ".join(n for n, (builder, _, _) in VISION.items() if builder is mlp)
        raise ValueError(f"algorithm=ebp trains binary-weight MLPs on images; model {name!r} is not one ({mlps})")
    unknown = set(options) - {"widths"}
    if unknown:
        raise ValueError(f"model {name!r} with algorithm=ebp takes only the option widths, not {sorted(unknown)}")
    widths = options.get("widths", VISION[name][1]["widths"])
    return EBPNetwork([math.prod(shape), *widths, classes])


__all__ = ["EBPNetwork", "RNNLanguageModel", "available", "build", "build_ebp", "describe"]
