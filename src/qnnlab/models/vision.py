"""Float architectures for image classification; ``qnnlab.models.build`` quantizes them by rules.

Each builder takes the input shape (C, H, W), the number of classes, the normalisation and the
activation (see ``blocks``). A hidden block is Linear/Conv -> [MaxPool] -> Norm -> Activation,
pooling before normalisation as in the BNN paper.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from qnnlab.models.blocks import activation, norm
from qnnlab.nn import DropConnectLinear, Maxout, ResidualSum


def mlp(
    shape: Sequence[int],
    classes: int,
    widths: Sequence[int] = (2048, 2048, 2048),
    norm_kind: str = "bn",
    act: str = "relu",
    dropout: float = 0.0,
    input_dropout: float = 0.0,
    output_norm: bool = False,
    dropconnect: float = 0.0,
    dropconnect_layers: str = "classifier",
    dropconnect_inference: str = "mean",
    shortcut: bool = False,
    maxout: int = 0,
) -> nn.Module:
    """Fully connected net: input -> widths... -> classes; optional output batch norm (BNN).

    ``shortcut``: each hidden layer after the first, where its width is unchanged, inside a
    ``RealShortcut`` (Bi-Real Net). dropconnect > 0 makes the classifier
    (``dropconnect_layers="classifier"``, as Wan et al. on MNIST) or every layer (``"all"``) a
    DropConnectLinear with that drop rate, a mask per sample; the masks are drawn, never stored
    (``qnnlab bench train-step`` measures what they cost); ``dropconnect_inference``: mean or
    moments (Wan et al.'s moment matching, see ``DropConnectLinear``). ``maxout`` > 0: each hidden
    unit is the maximum of that many linear pieces (Goodfellow et al. 2013) instead of an activation.
    """
    if dropconnect_layers not in ("classifier", "all"):
        raise ValueError(f"dropconnect_layers={dropconnect_layers!r}; use classifier or all")
    if not widths or not all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in widths):
        raise ValueError(f"mlp widths={list(widths)!r}: give one or more positive layer widths such as [256, 256]")
    layers: list[nn.Module] = [nn.Flatten()]
    if input_dropout:
        layers.append(nn.Dropout(input_dropout))
    previous = math.prod(shape)

    def linear(i: int, n_in: int, n_out: int, bias: bool) -> nn.Module:
        if dropconnect and (i == len(widths) or dropconnect_layers == "all"):
            return DropConnectLinear(n_in, n_out, bias, p=dropconnect, inference=dropconnect_inference)
        return nn.Linear(n_in, n_out, bias=bias)

    for i, width in enumerate(widths):
        if maxout:  # each unit the maximum of `maxout` linear pieces, no other activation
            layers += [linear(i, previous, width * maxout, norm_kind == "none"), norm(norm_kind, width * maxout, 1)]
            layers.append(Maxout(maxout))
            if dropout:
                layers.append(nn.Dropout(dropout))
            previous = width
            continue
        if shortcut and i > 0 and width == previous:  # Bi-Real Net's real-valued shortcut
            branch = nn.Sequential(linear(i, previous, width, norm_kind == "none"), norm(norm_kind, width, 1))
            layers.append(RealShortcut(branch, nn.Identity(), activation(act, width)))
        else:
            layers += [
                linear(i, previous, width, norm_kind == "none"),
                norm(norm_kind, width, 1),
                activation(act, width),
            ]
        if dropout:
            layers.append(nn.Dropout(dropout))
        previous = width
    layers.append(linear(len(widths), previous, classes, True))
    if output_norm:
        layers.append(norm(norm_kind, classes, 1))
    return nn.Sequential(*layers)


def conv_net(
    shape: Sequence[int],
    classes: int,
    plan: Sequence[int | str],
    hidden: Sequence[int],
    norm_kind: str = "bn",
    act: str = "relu",
    output_norm: bool = False,
    dropout: float = 0.0,
    shortcut: bool = False,
) -> nn.Module:
    """A VGG-style plan: integers are 3x3 conv widths (padding 1), "M" a 2x2 max pool after the
    previous conv; then fully connected ``hidden`` widths and the classifier. ``shortcut``: every
    convolution after the first inside a ``RealShortcut`` (Bi-Real Net)."""
    channels, height, width = shape
    layers: list[nn.Module] = []
    i = 0
    while i < len(plan):
        out = plan[i]
        assert isinstance(out, int)
        pooled = i + 1 < len(plan) and plan[i + 1] == "M"
        branch: list[nn.Module] = [nn.Conv2d(channels, out, 3, padding=1, bias=norm_kind == "none")]
        if pooled:
            branch.append(nn.MaxPool2d(2))
            height, width = height // 2, width // 2
            i += 1
        branch.append(norm(norm_kind, out, 2))
        if shortcut and layers:
            layers.append(
                RealShortcut(
                    nn.Sequential(*branch), _conv_shortcut(channels, out, pooled, norm_kind), activation(act, out)
                )
            )
        else:
            layers += [*branch, activation(act, out)]
        channels = out
        i += 1
    layers.append(nn.Flatten())
    layers += classifier(channels * height * width, hidden, classes, norm_kind, act, dropout, output_norm)
    return nn.Sequential(*layers)


def classifier(
    previous: int, hidden: Sequence[int], classes: int, norm_kind: str, act: str, dropout: float, output_norm: bool
) -> list[nn.Module]:
    """Fully connected hidden layers (Linear -> Norm -> Activation [-> Dropout]) and the output layer."""
    layers: list[nn.Module] = []
    for units in hidden:
        layers += [
            nn.Linear(previous, units, bias=norm_kind == "none"),
            norm(norm_kind, units, 1),
            activation(act, units),
        ]
        if dropout:
            layers.append(nn.Dropout(dropout))
        previous = units
    layers.append(nn.Linear(previous, classes))
    if output_norm:
        layers.append(norm(norm_kind, classes, 1))
    return layers


def small_cnn(shape: Sequence[int], classes: int, width: float = 1.0, **kw) -> nn.Module:
    """64C3-64C3-MP2-128C3-128C3-MP2-256C3-256C3-MP2-512FC for 28x28 inputs; ``width`` multiplies
    every layer's channels and units (0.5: 32C3-...-256FC)."""
    if not width > 0:
        raise ValueError(f"cnn width={width!r} must be > 0 (a channel multiplier such as 0.5)")
    scaled = [
        max(1, round(c * width)) if isinstance(c, int) else c for c in (64, 64, "M", 128, 128, "M", 256, 256, "M")
    ]
    return conv_net(shape, classes, scaled, [max(1, round(512 * width))], **kw)


def vgg_cifar(shape: Sequence[int], classes: int, **kw) -> nn.Module:
    """BinaryConnect / BinaryNet CIFAR-10 net: 2x128C3-MP2-2x256C3-MP2-2x512C3-MP2-2x1024FC."""
    return conv_net(shape, classes, [128, 128, "M", 256, 256, "M", 512, 512, "M"], [1024, 1024], **kw)


def alexnet(
    shape: Sequence[int],
    classes: int,
    norm_kind: str = "bn",
    act: str = "relu",
    output_norm: bool = False,
    dropout: float = 0.5,
) -> nn.Module:
    """AlexNet (Krizhevsky et al. 2012, single-tower) with batch norm, as XNOR-Net and DoReFa train it."""
    layers: list[nn.Module] = []
    channels = shape[0]
    for out, kernel, stride, pad, pool in (
        (96, 11, 4, 2, True),
        (256, 5, 1, 2, True),
        (384, 3, 1, 1, False),
        (384, 3, 1, 1, False),
        (256, 3, 1, 1, True),
    ):
        layers.append(nn.Conv2d(channels, out, kernel, stride, pad, bias=norm_kind == "none"))
        if pool:
            layers.append(nn.MaxPool2d(3, 2))
        layers += [norm(norm_kind, out, 2), activation(act, out)]
        channels = out
    layers += [nn.AdaptiveAvgPool2d(6), nn.Flatten()]
    layers += classifier(channels * 36, (4096, 4096), classes, norm_kind, act, dropout, output_norm)
    return nn.Sequential(*layers)


class RealShortcut(nn.Module):
    """Bi-Real Net's block (Liu et al. 2018, arXiv 1808.00278): the layer's branch (a binary
    layer, its pooling and batch norm) plus its real-valued input carried around it, then the
    activation: the real activations survive each sign. Where the branch changes the size, the
    shortcut pools (average, as Bi-Real) and where it changes the channels, a 1x1 convolution with
    batch norm maps them (binary under a recipe's ``*`` rule; a rule on ``*shortcut*`` keeps it real)."""

    def __init__(self, branch: nn.Module, shortcut: nn.Module, act: nn.Module) -> None:
        super().__init__()
        self.branch, self.shortcut, self.act, self.sum = branch, shortcut, act, ResidualSum()

    def forward(self, x):
        return self.act(self.sum(self.branch(x), self.shortcut(x)))


def _conv_shortcut(cin: int, cout: int, pooled: bool, norm_kind: str) -> nn.Module:
    parts: list[nn.Module] = [nn.AvgPool2d(2)] if pooled else []
    if cin != cout:
        parts += [nn.Conv2d(cin, cout, 1, bias=False), norm(norm_kind, cout, 2)]
    return nn.Sequential(*parts) if parts else nn.Identity()


class BasicBlock(nn.Module):
    """ResNet basic block: conv3-BN-act-conv3-BN plus the (1x1 conv-BN) shortcut, then act."""

    def __init__(self, cin: int, cout: int, stride: int, norm_kind: str, act: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = norm(norm_kind, cout, 2)
        self.act1 = activation(act, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = norm(norm_kind, cout, 2)
        self.act2 = activation(act, cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), norm(norm_kind, cout, 2))
        self.sum = ResidualSum()

    def forward(self, x):
        y = self.act1(self.bn1(self.conv1(x)))
        return self.act2(self.sum(self.bn2(self.conv2(y)), self.shortcut(x)))


def resnet18(
    shape: Sequence[int], classes: int, norm_kind: str = "bn", act: str = "relu", output_norm: bool = False
) -> nn.Module:
    """ResNet-18 (He et al. 2016): 7x7/2 stem, max pool, 4 stages of 2 basic blocks, average pool."""
    layers: list[nn.Module] = [
        nn.Conv2d(shape[0], 64, 7, 2, 3, bias=False),
        norm(norm_kind, 64, 2),
        nn.ReLU(),
        nn.MaxPool2d(3, 2, 1),
    ]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [BasicBlock(cin, cout, stride, norm_kind, act), BasicBlock(cout, cout, 1, norm_kind, act)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, classes)]
    if output_norm:
        layers.append(norm(norm_kind, classes, 1))
    return nn.Sequential(*layers)
