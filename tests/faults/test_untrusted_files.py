"""Files from someone else: a pickle or YAML payload meant to run code is refused and nothing runs;
a safetensors header that lies about sizes or offsets is refused without reading out of bounds; a
packed model crafted with a consistent checksum but tables that do not fit is refused at load."""

import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from qnnlab import runtime
from qnnlab.cli import main
from qnnlab.run import checkpoint
from qnnlab.run.config import parse_overrides, recipe_values
from qnnlab.storage import tensors_digest
from qnnlab.sweep import spec as sweep_spec

pytestmark = pytest.mark.bad_input


class Payload:
    """Unpickling this runs ``open(marker, 'w')``: the marker file proves code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def pickled(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"state": Payload(tmp_path / "ran"), "w": torch.ones(2)}, path)
    return path


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "{file}"],
        ["export", "{file}", "{dir}/m.qnn"],
        [
            "train",
            "--recipe",
            "float",
            "--model",
            "mlp-small",
            "--dataset",
            "fashion-mnist-mini",
            "--set",
            "init_from={file}",
            "--out",
            "{dir}/run",
            "--set",
            "limit_steps=1",
        ],
    ],
    ids=["eval", "export", "init_from"],
)
def test_a_pickled_checkpoint_is_refused_and_runs_nothing(pickled, tmp_path, capsys, argv):
    assert main([a.format(file=pickled, dir=tmp_path) for a in argv]) == 2
    assert "not a readable safetensors" in capsys.readouterr().err
    assert not (tmp_path / "ran").exists()


def test_a_pickled_file_is_not_a_packed_model_or_checkpoint(pickled, tmp_path):
    for load in (runtime.load, checkpoint.load):
        with pytest.raises(ValueError, match="not a readable safetensors"):
            load(pickled)
    assert not (tmp_path / "ran").exists()


TAGS = [
    "!!python/object/apply:builtins.open ['{marker}', 'w']",
    "!!python/object/new:builtins.open ['{marker}', 'w']",
    "!!python/name:os.system",
    "!!python/module:os",
]


@pytest.mark.parametrize("tag", TAGS)
def test_a_yaml_tag_in_a_recipe_sweep_or_override_runs_nothing(tmp_path, tag):
    value = tag.format(marker=tmp_path / "ran")
    (tmp_path / "r.yaml").write_text(f"epochs: {value}\n")
    (tmp_path / "s.yaml").write_text(f"base: {{recipe: bnn}}\ngrid: {{lr: {{a: {value}}}}}\n")
    for load in (
        lambda: recipe_values(str(tmp_path / "r.yaml")),
        lambda: sweep_spec.load(tmp_path / "s.yaml"),
        lambda: parse_overrides([f"epochs={value}"]),
    ):
        with pytest.raises(ValueError):
            load()
    assert not (tmp_path / "ran").exists()


def _safetensors(header: dict, data: bytes = b"", length: int | None = None) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text) if length is None else length) + text + data


LYING_HEADERS = {
    "header length beyond the file": _safetensors({}, length=2**60),
    "header length of zero": _safetensors({}, length=0),
    "offsets beyond the data": _safetensors({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8),
    "shape larger than its bytes": _safetensors(
        {"w": {"dtype": "F32", "shape": [2**31, 2**31], "data_offsets": [0, 8]}}, b"\0" * 8
    ),
    "offsets reversed": _safetensors({"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, b"\0" * 8),
    "overlapping tensors": _safetensors(
        {
            "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
            "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
        },
        b"\0" * 12,
    ),
    "unknown dtype": _safetensors({"w": {"dtype": "X99", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8),
    "header not json": struct.pack("<Q", 5) + b"{{{{{",
}


@pytest.mark.parametrize("case", LYING_HEADERS)
def test_a_safetensors_header_that_lies_is_refused(tmp_path, case):
    path = tmp_path / "lie.safetensors"
    path.write_bytes(LYING_HEADERS[case])
    for load in (runtime.load, checkpoint.load):
        with pytest.raises(ValueError, match="not a readable safetensors"):
            load(path)


def _exported(tmp_path, recipe):
    """(tensors, ops) of a width-0.25 CNN of ``recipe`` exported honestly, to forge from."""
    from qnnlab.data import ImageData
    from qnnlab.run import build_model, resolve

    model = build_model(
        resolve(recipe, {"model": "cnn", "model_options": {"width": 0.25}}), ImageData.empty((1, 28, 28), 10)
    )
    runtime.export(model.eval(), tmp_path / "m.qnn", input_shape=(1, 28, 28), input_grid=runtime.PIXELS)
    packed = runtime.load(tmp_path / "m.qnn")
    return dict(packed.tensors), [dict(op) for op in packed.ops]


@pytest.fixture
def honest(tmp_path):
    return _exported(tmp_path, "bnn")


def forge(path, tensors, ops, inputs=None):
    """A packed file whose checksum is consistent with its (crafted) contents."""
    ops_json = json.dumps(ops) if not isinstance(ops, str) else ops
    inputs_json = json.dumps(inputs or {"shape": [1, 28, 28], "grid": "pixels"})
    metadata = {
        "format": runtime.FORMAT,
        "version": str(runtime.VERSION),
        "ops": ops_json,
        "input": inputs_json,
        "sha256": tensors_digest(ops_json + inputs_json, tensors),
        "source": "{}",
    }
    save_file(tensors, str(path), metadata=metadata)


def _first(ops, kind):
    return next(op for op in ops if op["op"] == kind)


def _threshold_of_layout(ops, layout):
    return next(op for op in ops if op["op"] == "threshold" and op["layout"] == layout)


FORGERIES = {
    "flat thresholds too short": lambda t, o: t.update(
        {_threshold_of_layout(o, "flat")["threshold"]: torch.zeros(10).double()}
    ),
    "flat thresholds too long": lambda t, o: [
        t.update({_threshold_of_layout(o, "flat")[k]: v.repeat(3)})
        for k, v in [(k, t[_threshold_of_layout(o, "flat")[k]]) for k in ("threshold", "positive", "constant")]
    ],
    "channel thresholds of another count": lambda t, o: t.update(
        {_threshold_of_layout(o, "nhwc")["threshold"]: torch.zeros(3).double()}
    ),
    "thresholds of the wrong dtype": lambda t, o: t.update(
        {_threshold_of_layout(o, "nhwc")["positive"]: torch.zeros(16)}
    ),
    "filters with a word missing": lambda t, o: t.update(
        {_first(o, "binary_conv")["weight"]: t[_first(o, "binary_conv")["weight"]][:, :-1].contiguous()}
    ),
    "more filters than channels claimed": lambda t, o: _first(o, "binary_conv").update(out_channels=64),
    "a classifier for more features": lambda t, o: _first(o, "binary_linear").update(
        k=_first(o, "binary_linear")["k"] * 2
    ),
    "a negative stride": lambda t, o: _first(o, "binary_conv").update(stride=-1),
    "a kernel of text": lambda t, o: _first(o, "binary_conv").update(kernel="3x3"),
    "a missing tensor": lambda t, o: t.pop(_first(o, "real_conv")["weight"]),
    "an unknown op": lambda t, o: o.insert(0, {"op": "exec", "code": "print(1)"}),
    "an unknown layout": lambda t, o: _threshold_of_layout(o, "nhwc").update(layout="diagonal"),
    "a bias of another length": lambda t, o: (
        t.update({"b": torch.zeros(3)}) or _first(o, "binary_linear").update(bias="b")
    ),
    "an op list that is not a list": lambda t, o: (o.clear(), o.append("flatten")),
}


@pytest.mark.parametrize("case", FORGERIES)
def test_a_forged_packed_model_with_a_consistent_checksum_is_refused_at_load(tmp_path, honest, case):
    tensors, ops = honest
    FORGERIES[case](tensors, ops)
    forge(tmp_path / "forged.qnn", tensors, ops)
    with pytest.raises(ValueError, match="forged.qnn"):
        runtime.load(tmp_path / "forged.qnn")


@pytest.mark.parametrize(
    "ops, inputs",
    [
        ("[" * 100_000 + "]" * 100_000, None),
        ("[]", None),
        ("{}", None),
        (None, {"shape": [0, 28], "grid": "pixels"}),
        (None, {"shape": [1, 28, 28], "grid": "celsius"}),
        (None, {"shape": "28x28"}),
    ],
    ids=["deep json", "no ops", "a mapping", "a zero size", "an unknown grid", "a shape of text"],
)
def test_malformed_packed_metadata_is_named(tmp_path, honest, ops, inputs):
    tensors, honest_ops = honest
    forge(tmp_path / "forged.qnn", tensors, honest_ops if ops is None else ops, inputs)
    with pytest.raises(ValueError, match="forged.qnn"):
        runtime.load(tmp_path / "forged.qnn")


@pytest.fixture
def honest_maps(tmp_path):
    """An XNOR-Net CNN: a float first convolution, quantized convolutions, per-channel batch norm."""
    return _exported(tmp_path, "xnor")


MAP_FORGERIES = {
    "an inner op with fewer outputs": lambda t, o: _first(o, "quantized_conv").update(out_channels=7),
    "an inner op that is not a linear product": lambda t, o: _first(o, "quantized_conv").update(
        inner={"op": "quantized_conv"}
    ),
    "an inner op for other patches": lambda t, o: _first(o, "quantized_conv").update(kernel=[5, 5]),
    "channel scales of another count": lambda t, o: t.update({_first(o, "channel_affine")["scale"]: torch.ones(3)}),
    "float filters of another size": lambda t, o: t.update({_first(o, "conv")["weight"]: torch.zeros(16, 1, 5, 5)}),
}


@pytest.mark.parametrize("case", MAP_FORGERIES)
def test_a_forged_model_on_real_feature_maps_is_refused_at_load(tmp_path, honest_maps, case):
    tensors, ops = honest_maps
    MAP_FORGERIES[case](tensors, ops)
    forge(tmp_path / "forged.qnn", tensors, ops)
    with pytest.raises(ValueError, match="forged.qnn"):
        runtime.load(tmp_path / "forged.qnn")


@pytest.mark.parametrize(
    "case", ["a shortcut that does not pool", "a branch that is not a list", "an unknown op in a branch"]
)
def test_a_forged_shortcut_block_is_refused_at_load(tmp_path, case):
    tensors, ops = _exported(tmp_path, "bnn-plus")
    block = _first(ops, "residual")  # the first block pools: its shortcut is an average pooling
    if case == "a shortcut that does not pool":
        block["shortcut"] = []
    elif case == "a branch that is not a list":
        block["branch"] = "flatten"
    else:
        block["branch"] = [{"op": "exec", "code": "print(1)"}]
    forge(tmp_path / "forged.qnn", tensors, ops)
    with pytest.raises(ValueError, match="forged.qnn"):
        runtime.load(tmp_path / "forged.qnn")
