"""Every model builds for its data, runs forward and backward, and takes quantization rules."""

import pytest
import torch

from qnnlab import models
from qnnlab.nn import DropConnectLinear, QuantConv2d, QuantLinear, ShiftBatchNorm2d

CASES = [
    ("mlp-small", (1, 28, 28)),
    ("mlp-bc", (1, 28, 28)),
    ("cnn", (1, 28, 28)),
    ("vgg-cifar", (3, 32, 32)),
    ("alexnet", (3, 224, 224)),
    ("resnet18", (3, 64, 64)),
]


@pytest.mark.parametrize("name, shape", CASES)
def test_vision_models_forward_backward_quantized(name, shape):
    torch.manual_seed(0)
    model = models.build(
        name,
        shape=shape,
        classes=10,
        activation="identity",
        rules=[{"weight": "sign", "input": "sign"}, {"match": "first", "input": "float"}],
    )
    x = torch.randn(2, *shape)
    y = model(x)
    assert y.shape == (2, 10)
    y.sum().backward()
    assert any(isinstance(m, (QuantLinear, QuantConv2d)) for m in model.modules())


def test_presets_and_options():
    bnn = models.build("mlp-bnn", shape=(1, 28, 28), classes=10)
    assert [m.out_features for m in bnn if isinstance(m, torch.nn.Linear)] == [4096, 4096, 4096, 10]
    custom = models.build("mlp", shape=(1, 28, 28), classes=10, widths=[64, 32], dropconnect=0.5)
    dropconnect = [m for m in custom.modules() if isinstance(m, DropConnectLinear)]
    assert len(dropconnect) == 1 and dropconnect[0].out_features == 10  # the classifier
    shift = models.build("cnn", shape=(1, 28, 28), classes=10, norm="shift")
    assert any(isinstance(m, ShiftBatchNorm2d) for m in shift.modules())


def test_language_model():
    lm = models.build(
        "gru-lm",
        vocab=50,
        rules=[{"match": "GRU", "weight": "int:bits=4", "state": "int:bits=4"}],
        hidden=32,
        embed=8,
        layers=2,
    )
    logits, state = lm(torch.randint(0, 50, (3, 7)))
    assert logits.shape == (3, 7, 50) and state.shape == (2, 3, 32)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"name": "nosuch", "shape": (1, 28, 28), "classes": 10}, "unknown model"),
        ({"name": "mlp", "vocab": 10}, "needs an image data set"),
        ({"name": "lstm-lm", "shape": (1, 28, 28), "classes": 10}, "needs a text data set"),
        ({"name": "mlp", "shape": (1, 28, 28), "classes": 10, "depth": 3}, "bad option"),
        ({"name": "mlp", "shape": (1, 28, 28), "classes": 10, "norm": "layer"}, "norm="),
    ],
)
def test_bad_model_requests(kwargs, words):
    name = kwargs.pop("name")
    with pytest.raises(ValueError, match=words):
        models.build(name, **kwargs)


def test_the_xnor_cnn_has_the_papers_block_order():
    """XNOR-Net's block is BN -> binary activation -> binary convolution -> pooling (Rastegari et al.
    2016, fig. 3): every binary convolution reads a batch norm's output through its scaled sign, and
    pooling acts on the convolution's output before the next batch norm, never on binary values."""
    from qnnlab.data import ImageData
    from qnnlab.nn import QuantConv2d
    from qnnlab.run import build_model, resolve

    model = build_model(resolve("xnor", {"model": "cnn"}), ImageData.empty((1, 28, 28), 10))
    kinds = [type(m).__name__ for m in model]
    for i, m in enumerate(model):
        if isinstance(m, QuantConv2d):
            assert kinds[i - 2 : i] == ["BatchNorm2d", "Identity"] and m.input_quantizer.name == "xnor_act"
        if kinds[i] == "MaxPool2d":
            assert kinds[i - 1] == "QuantConv2d" and kinds[i + 1] == "BatchNorm2d"


@pytest.mark.parametrize(
    "model, options, rules",
    [
        ("mlp", {"widths": [64, 64, 64], "shortcut": True}, []),
        ("cnn", {"width": 0.125, "shortcut": True}, [{"match": "*shortcut*", "keep": True}]),
    ],
)
def test_bireal_shortcuts_carry_the_real_input_around_each_binary_layer(model, options, rules):
    from qnnlab.analysis import profile
    from qnnlab.data import ImageData
    from qnnlab.models.vision import RealShortcut
    from qnnlab.nn import QuantConv2d
    from qnnlab.run import build_model, resolve

    config = resolve("bnn", {"model": model, "model_options": options, "rules": [*resolve("bnn").rules, *rules]})
    built = build_model(config, ImageData.empty((1, 28, 28), 10))
    blocks = [m for m in built.modules() if isinstance(m, RealShortcut)]
    assert blocks and all(not isinstance(m, QuantConv2d) for b in blocks for m in b.shortcut.modules())
    block = blocks[0]
    x = torch.randn(2, *([64] if model == "mlp" else [8, 28, 28]))
    with torch.no_grad():
        assert torch.allclose(block(x), block.act(block.branch(x) + block.shortcut(x)))
    assert built(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    assert profile(built, torch.randn(2, 1, 28, 28)).energy_pj() > 0


@pytest.mark.parametrize("shortcut", [False, True])
def test_mlp_dropout_follows_every_hidden_layer_with_or_without_shortcuts(shortcut):
    from qnnlab.models.vision import mlp

    layers = list(mlp((1, 4, 4), 10, widths=(8, 8, 8), dropout=0.25, input_dropout=0.1, shortcut=shortcut))
    drops = [i for i, m in enumerate(layers) if isinstance(m, torch.nn.Dropout)]
    assert [layers[i].p for i in drops] == [0.1, 0.25, 0.25, 0.25]
    assert drops[0] == 1 and isinstance(layers[drops[-1] + 1], torch.nn.Linear)


def test_maxout_units_take_the_largest_of_their_pieces():
    from qnnlab.data import ImageData
    from qnnlab.nn import Maxout
    from qnnlab.run import build_model, resolve

    x = torch.tensor([[1.0, 5.0, -2.0, 0.0, 3.0, 3.5]])
    assert torch.equal(Maxout(3)(x), torch.tensor([[5.0, 3.5]]))
    with pytest.raises(ValueError, match="pieces=0"):
        Maxout(0)
    model = build_model(resolve("lowprec2014-maxout"), ImageData.empty((1, 28, 28), 10))
    assert sum(isinstance(m, Maxout) for m in model.modules()) == 2
    assert model(torch.randn(4, 1, 28, 28)).shape == (4, 10)
