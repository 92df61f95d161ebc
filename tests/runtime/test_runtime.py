"""Export and packed runtime: same predictions as PyTorch, small files, bad files refused."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import qnnlab.runtime.ops  # noqa: F401
from qnnlab import data, kernels, runtime
from qnnlab.cli import main
from qnnlab.data.batches import to_unit_range
from qnnlab.data.vision import FASHION_SYSTEM_DIR, IDX_NAMES
from qnnlab.run import checkpoint, deploy
from qnnlab.run.model import CHECKPOINT, build_model
from qnnlab.runtime import ExportError
from qnnlab.storage import tensors_digest
from qnnlab.train import Trainer, resolve

HAVE_FASHION = Path(FASHION_SYSTEM_DIR, IDX_NAMES[0]).is_file()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    runs = {}
    for recipe in ("bnn", "bnn-shift"):
        trainer = Trainer(
            resolve(recipe, {"model": "mlp-small", "epochs": 1, "limit_steps": 60, "threads": 1}),
            out / recipe,
            quiet=True,
        )
        trainer.run()
        runs[recipe] = (trainer.model.eval(), out / recipe)
    return runs


@pytest.mark.parametrize("recipe", ["bnn", "bnn-shift"])
def test_runtime_matches_pytorch_on_the_test_set(trained, tmp_path, recipe):
    model, _ = trained[recipe]
    runtime.export(model, tmp_path / "m.qnn")
    packed = runtime.load(tmp_path / "m.qnn")
    test = data.load("fashion-mnist" if HAVE_FASHION else "fashion-mnist-mini")
    x = to_unit_range(test.test_x)
    with torch.no_grad():
        expected = model(x)
    got = packed(x)
    assert torch.equal(got.argmax(1), expected.argmax(1))  # 100% of the test set
    # The runtime's first layer is exact integer arithmetic; PyTorch's float32 sum rounds (~1e-5).
    # Logits may differ only where a pre-activation lies within that rounding of a threshold.
    first = packed.steps[1].packed(x.reshape(len(x), -1))
    threshold = packed.tensors[packed.ops[2]["threshold"]]
    near_tie = ((first.double() - threshold).abs() < 1e-4).any(1)
    close = torch.isclose(got, expected, atol=1e-4, rtol=1e-5).all(1)
    assert bool((close | near_tie).all()) and int(near_tie.sum()) <= len(x) // 100
    assert torch.allclose(packed.reference(x[:500]), expected[:500], atol=1e-3, rtol=1e-5) or bool(near_tie[:500].any())


def test_off_grid_inputs_take_the_float_path_unless_the_model_was_trained_on_pixels(trained, tmp_path):
    model, _ = trained["bnn"]
    runtime.export(model, tmp_path / "m.qnn")
    x = torch.randn(50, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(runtime.load(tmp_path / "m.qnn")(x).argmax(1), model(x).argmax(1))
    runtime.export(model, tmp_path / "pixels.qnn", input_grid=runtime.PIXELS)
    with pytest.raises(ValueError, match="not on the 8-bit pixel grid"):
        runtime.load(tmp_path / "pixels.qnn")(x)


@pytest.mark.parametrize("model_name, ratio", [("mlp", 25), ("cnn", 20)])
def test_packed_file_is_much_smaller_than_float(tmp_path, model_name, ratio):
    shape_only = data.ImageData.empty((1, 28, 28), 10)
    model = build_model(resolve("bnn", {"model": model_name}), shape_only).eval()
    runtime.export(model, tmp_path / "m.qnn", input_shape=(1, 28, 28))
    float_bytes = sum(v.numel() * 4 for v in model.state_dict().values() if v.dtype.is_floating_point)
    assert float_bytes / (tmp_path / "m.qnn").stat().st_size >= ratio


def test_cli_export(trained, tmp_path, capsys):
    _, run = trained["bnn"]
    assert main(["export", str(run), str(tmp_path / "cli.qnn")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ratio"] > 20 and runtime.load(tmp_path / "cli.qnn").source["config"]["recipe"] == "bnn"
    assert main(["eval", str(run), "--packed", str(tmp_path / "cli.qnn")]) == 0
    compared = json.loads(capsys.readouterr().out)
    assert compared["agreeing_predictions"] == compared["images"] == 2000
    assert compared["packed_accuracy"] == compared["model_accuracy"] > 0.5


def test_export_does_not_load_the_data_set(trained, tmp_path, monkeypatch):

    _, run = trained["bnn"]
    reference = deploy.export_checkpoint(run, tmp_path / "with-data.qnn")

    def no_data(*args, **kwargs):
        raise AssertionError("export loaded the data set")

    monkeypatch.setattr(data, "load", no_data)
    assert deploy.export_checkpoint(run, tmp_path / "m.qnn")["bytes"] == reference["bytes"]
    monkeypatch.undo()
    # a checkpoint from before the input shape was recorded still exports, through the data set
    state, extra, info = checkpoint.load(run / CHECKPOINT)
    del info["image_shape"], info["classes"]
    checkpoint.save(tmp_path / "old.safetensors", state, extra, info)
    deploy.export_checkpoint(tmp_path / "old.safetensors", tmp_path / "old.qnn")
    assert runtime.load(tmp_path / "old.qnn").ops == runtime.load(tmp_path / "m.qnn").ops
    # a recorded shape that does not fit the weights is named, not a traceback from load_state_dict
    checkpoint.save(tmp_path / "edited.safetensors", state, extra, {**info, "image_shape": [3, 32, 32], "classes": 10})
    with pytest.raises(ValueError, match="weights do not fit the model"):
        deploy.export_checkpoint(tmp_path / "edited.safetensors", tmp_path / "edited.qnn")


def test_cli_packed_comparison_refuses_wrong_arguments_and_files(trained, tmp_path, capsys):
    (_, bnn_run), (_, shift_run) = trained["bnn"], trained["bnn-shift"]
    packed = tmp_path / "shift.qnn"
    assert main(["export", str(shift_run), str(packed)]) == 0
    capsys.readouterr()
    assert main(["eval", str(bnn_run), "--packed", str(packed)]) == 2
    assert "not from this checkpoint" in capsys.readouterr().err
    assert main(["eval", str(shift_run), "--packed", str(packed), "--mode", "latent"]) == 2
    assert "drop --mode" in capsys.readouterr().err
    state, extra, info = checkpoint.load(shift_run / CHECKPOINT)
    state = {k: v + 1 if k.endswith("weight") else v for k, v in state.items()}  # another run, same config
    checkpoint.save(tmp_path / "other.safetensors", state, extra, info)
    assert main(["eval", str(tmp_path / "other.safetensors"), "--packed", str(packed)]) == 2
    assert "another run of the same config" in capsys.readouterr().err
    (tmp_path / "cut.qnn").write_bytes(packed.read_bytes()[:1000])
    assert main(["eval", str(shift_run), "--packed", str(tmp_path / "cut.qnn")]) == 2
    assert "cut.qnn" in capsys.readouterr().err


def test_bad_files_are_refused(trained, tmp_path):
    model, _ = trained["bnn"]
    path = tmp_path / "m.qnn"
    runtime.export(model, path)
    raw = path.read_bytes()
    (tmp_path / "cut.qnn").write_bytes(raw[: len(raw) - 100])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        runtime.load(tmp_path / "cut.qnn")
    tampered = bytearray(raw)
    tampered[-5] ^= 0xFF  # flip bits of the last packed weights
    (tmp_path / "tampered.qnn").write_bytes(bytes(tampered))
    with pytest.raises(ValueError, match="modified after export"):
        runtime.load(tmp_path / "tampered.qnn")
    version = f'"version":"{runtime.VERSION}"'.encode()
    assert version in raw
    (tmp_path / "newer.qnn").write_bytes(raw.replace(version, b'"version":"9"'))
    with pytest.raises(ValueError, match="upgrade qnnlab"):
        runtime.load(tmp_path / "newer.qnn")
    with pytest.raises(ValueError, match="not a qnnlab-packed file"):
        runtime.load(trained["bnn"][1] / "checkpoint.safetensors")
    with pytest.raises(ValueError, match="does not exist"):
        runtime.load(tmp_path / "none.qnn")
    with pytest.raises(ValueError, match="float tensor"):
        runtime.load(path)(torch.zeros(2, 784, dtype=torch.long))
    with pytest.raises(ValueError, match=r"shape \(100,\); the model was exported for \(784,\)"):
        runtime.load(path)(torch.zeros(2, 100))


def test_any_float_layout_of_the_input_runs_as_its_float32_values(tmp_path):
    """The runtime converts an input to one float32 array once (``runtime.float32_values``): a
    tensor that needs grad, a strided view and a float64 copy of the same pixels give the
    float32 input's logits; a tensor off the CPU is refused by name."""
    torch.manual_seed(0)
    model = build_model(resolve("bnn", {"model": "mlp-small"}), data.ImageData.empty((1, 28, 28), 10)).eval()
    runtime.export(model, tmp_path / "m.qnn", input_shape=(1, 28, 28), input_grid=runtime.PIXELS)
    packed = runtime.load(tmp_path / "m.qnn")
    x = torch.randint(0, 256, (3, 1, 28, 28)).float() / 127.5 - 1
    expected = packed(x)
    wide = torch.zeros(3, 1, 28, 56)
    wide[..., ::2] = x
    for same in (x.clone().requires_grad_(), wide[..., ::2], x.double()):
        assert torch.equal(packed(same), expected)
        assert torch.equal(packed(same[:1]), expected[:1])  # the batch-1 kernel
    assert runtime.float32_values(x).ctypes.data == x.data_ptr()  # already float32 and contiguous: no copy
    with pytest.raises(ValueError, match=r"runs on the CPU, got a tensor on meta; move it with \.cpu\(\)"):
        packed(torch.empty(3, 1, 28, 28, device="meta"))


@pytest.mark.parametrize(
    "recipe, model, words",
    [
        ("lowprec2014", "mlp-small", "no product for weights dfxp on dfxp inputs"),
        ("ebp", "mlp-small", "supports nn.Sequential models; got EBPNetwork"),
    ],
)
def test_unsupported_models_are_named(tmp_path, recipe, model, words):
    shape_only = data.ImageData.empty((1, 28, 28), 10)
    with pytest.raises(ExportError, match=words):
        runtime.export(
            build_model(resolve(recipe, {"model": model}), shape_only), tmp_path / "x.qnn", None, (1, 28, 28)
        )


def test_scaled_binary_weights_on_the_input_run_as_weight_only_products(tmp_path):
    from torch import nn

    from qnnlab.nn import QuantLinear

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), QuantLinear(70, 3, weight_quantizer="xnor_weight")).eval()
    runtime.export(model, tmp_path / "x.qnn")
    packed = runtime.load(tmp_path / "x.qnn")
    assert [op["op"] for op in packed.ops] == ["flatten", "sign_weight_linear"]
    x = torch.randn(5, 70)
    torch.testing.assert_close(packed(x), model(x), rtol=1e-5, atol=1e-4)


def test_a_first_layer_on_a_k_bit_grid_runs_bit_serial(tmp_path):
    from torch import nn

    from qnnlab.nn import QuantLinear

    torch.manual_seed(0)
    layer = QuantLinear(70, 5, weight_quantizer="xnor_weight", input_quantizer="uniform:bits=4,lo=-1.0")
    model = nn.Sequential(nn.Flatten(), layer).eval()
    runtime.export(model, tmp_path / "g.qnn")
    packed = runtime.load(tmp_path / "g.qnn")
    assert [op["op"] for op in packed.ops] == ["flatten", "codes_linear"]
    x = torch.rand(6, 70) * 2.4 - 1.2  # some inputs outside [-1, 1], clipped as in training
    torch.testing.assert_close(packed(x), model(x), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("recipe", ["bnn", "bnn-shift"])
def test_binary_cnn_runtime_matches_pytorch(tmp_path, recipe):
    shape_only = data.ImageData.empty((1, 28, 28), 10)
    torch.manual_seed(0)
    model = build_model(resolve(recipe, {"model": "cnn"}), shape_only).eval()
    with torch.no_grad():  # batch-norm statistics as training would leave them: thresholds off zero
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-5, 5)
                m.running_var.uniform_(10, 100)
                m.weight.uniform_(-1, 1)
                m.bias.uniform_(-1, 1)
    runtime.export(model, tmp_path / "c.qnn", input_shape=(1, 28, 28))
    packed = runtime.load(tmp_path / "c.qnn")
    assert "binary_conv" in [op["op"] for op in packed.ops]
    x = to_unit_range(data.load("fashion-mnist-mini").test_x[:100])
    with torch.no_grad():
        expected = model(x)
    assert torch.equal(packed(x).argmax(1), expected.argmax(1))
    assert torch.allclose(packed(x), expected, atol=1e-4) and torch.allclose(packed.reference(x), expected, atol=1e-4)
    conv = next(step for step in packed.steps if step.kind == "binary_conv")
    for size in (3, 5, 9, 28):  # the direct convolution on packed images of any size equals torch's
        signs = torch.where(torch.rand(3, conv.channels, size, size) < 0.5, -1.0, 1.0)
        got = conv.packed(kernels.pack_nhwc(signs))
        assert torch.equal(got.permute(0, 3, 1, 2), conv.reference(signs))
    with pytest.raises(ExportError, match="input_shape"):
        runtime.export(model, tmp_path / "d.qnn")
    _write_version_1(packed, tmp_path / "v1.qnn")
    assert torch.equal(runtime.load(tmp_path / "v1.qnn")(x), packed(x))


def _write_version_1(packed, path):
    """The same model as a version-1 file, which also stored each convolution's padding correction;
    the runtime now makes its own, so these are written wrong on purpose."""
    ops = [dict(op) for op in packed.ops]
    tensors = dict(packed.tensors)
    for op in ops:
        if op["op"] == "binary_conv" and op["padding"]:
            op["correction"] = f"{op['layer']}.correction"
            tensors[op["correction"]] = torch.full((op["out_channels"], 1, 1), 10**6, dtype=torch.int32)
    ops_json = json.dumps(ops)
    save_file(
        tensors,
        str(path),
        metadata={
            "format": runtime.FORMAT,
            "version": "1",
            "ops": ops_json,
            "sha256": tensors_digest(ops_json, tensors),
            "source": "{}",
        },
    )


@pytest.mark.parametrize("path", ["int8 GEMM", "float32 GEMM", "bit planes"])
def test_the_first_layer_gives_the_same_exact_sums_on_every_path(path, monkeypatch):
    """The 8-bit first layer's integer sums: torch's int8 GEMM where the CPU has VNNI, a float32
    GEMM (exact below 2^24) where it has not, the bit-plane kernel past that; all bit for bit equal."""
    shape_only = data.ImageData.empty((1, 28, 28), 10)
    torch.manual_seed(0)
    model = build_model(resolve("bnn", {"model": "mlp-small"}), shape_only).eval()
    codes = torch.randint(0, 256, (5, 784)).float()
    x = codes / 127.5 - 1
    op, tensors = _real_linear_op(model)
    expected = (codes - 128).double() @ kernels.unpack(tensors[op["weight"]], 784).double().T
    monkeypatch.setattr(kernels, "int8_dot_products", lambda: path == "int8 GEMM")
    if path == "bit planes":
        monkeypatch.setattr(runtime.ops, "FLOAT32_EXACT", 128 * 784)
    first = runtime.ops.RealLinear(op, tensors)
    assert torch.equal(first.centred_sums(codes).double(), expected)
    torch.testing.assert_close(first.packed(x), first.reference(x), atol=1e-4, rtol=1e-5)


def _real_linear_op(model):
    from qnnlab.runtime.export import export_model

    ops, tensors = export_model(model)
    return next(op for op in ops if op["op"] == "real_linear"), tensors


@pytest.mark.parametrize("model_name, options", [("mlp-small", {}), ("mlp", {}), ("mlp", {"widths": [100, 70, 65]})])
def test_the_fused_mlp_kernel_computes_what_the_ops_compute(model_name, options, tmp_path):
    """At batch 1 a binary MLP runs as one kernel call, at larger batches as one call too where the
    CPU has VNNI (``FusedDenseBatch``), else as its plan (``PixelLinearThreshold``, then the
    binary layers); the logits of all equal the op-by-op path's bit for bit."""
    torch.manual_seed(0)
    config = resolve("bnn", {"model": model_name, "model_options": options})
    model = build_model(config, data.ImageData.empty((1, 28, 28), 10)).eval()
    _spread_batchnorm(model, (-3, 3), (0.5, 2))
    runtime.export(model, tmp_path / "m.qnn", input_shape=(1, 28, 28), input_grid=runtime.PIXELS)
    packed = runtime.load(tmp_path / "m.qnn")
    assert packed.fused is not None
    x = torch.randint(0, 256, (6, 1, 28, 28)).float() / 127.5 - 1
    assert isinstance(packed.plan[1], runtime.fused.PixelLinearThreshold)
    planned = packed(x)  # one call on VNNI tiles where the CPU has them, else the plan
    if packed.fused_batch is not None:
        packed.fused_batch = None
        assert torch.equal(packed(x), planned)
    packed.plan = [step.packed for step in packed.steps]
    by_ops = packed(x)
    assert torch.equal(planned, by_ops)
    for i in range(len(x)):
        assert torch.equal(packed(x[i : i + 1]), by_ops[i : i + 1])
    with torch.no_grad():
        assert torch.equal(packed(x[:1]).argmax(1), model(x[:1]).argmax(1))
    runtime.export(model, tmp_path / "any.qnn", input_shape=(1, 28, 28))  # no grid: off-grid inputs go float
    assert runtime.load(tmp_path / "any.qnn").fused is None


def test_the_fused_cnn_plan_equals_the_ops(tmp_path):
    """The first convolution with its threshold, each binary convolution with its pooling and
    threshold (the last in the classifier's flat order) and the classifier's binary layers: seven
    kernel calls, or one at batch 1, whose logits equal the op-by-op path's bit for bit."""
    torch.manual_seed(1)
    model = build_model(
        resolve("bnn", {"model": "cnn", "model_options": {"width": 0.25}}), data.ImageData.empty((1, 28, 28), 10)
    )
    _spread_batchnorm(model, (-5, 5), (10, 100))
    runtime.export(model.eval(), tmp_path / "c.qnn", input_shape=(1, 28, 28), input_grid=runtime.PIXELS)
    packed = runtime.load(tmp_path / "c.qnn")
    assert sum(isinstance(step, runtime.fused.ConvPoolThreshold) for step in packed.plan) == 5
    assert isinstance(packed.plan[0], runtime.fused.PixelConvThreshold)
    assert isinstance(packed.plan[-1], runtime.fused.BinaryTail) and len(packed.plan) == 7
    assert isinstance(packed.fused, runtime.fused.FusedCNN)
    x = torch.randint(0, 256, (3, 1, 28, 28)).float() / 127.5 - 1
    fused = packed(x)
    one_call = torch.cat([packed(x[i : i + 1]) for i in range(len(x))])  # batch 1: the whole CNN in one call
    packed.plan = [step.packed for step in packed.steps]
    assert torch.equal(fused, packed(x)) and torch.equal(one_call, fused)


@pytest.mark.parametrize(
    "recipe, product, flips",
    [
        ("binaryconnect", "sign_weight_linear", 0),
        ("binaryconnect-stochastic", "sign_weight_linear", 0),
        ("bwn", "sign_weight_linear", 0),
        ("dorefa", "codes_linear", 0),
        # BNN+ takes the sign of a real stream at 0, where the packed first layer's exact integer
        # arithmetic and torch's float32 rounding (which differs between CPUs: 2 rows on AMD Zen
        # 2 and 4, 3 on Intel Emerald Rapids) can disagree on a value within 1e-6 of zero
        ("bnn-plus", "residual", 4),
    ],
)
def test_binary_weight_recipes_with_real_or_k_bit_activations_run_packed(recipe, product, flips, tmp_path):
    """BinaryConnect and BWN: binary (or scaled binary) weights on real activations, additions
    only; DoReFa W1A2: the 2-bit activation codes' bit planes against the packed weights; QNN:
    2-bit weights and inputs (8-bit pixels first), bit-serial; XNOR-Net: the input signs with their
    scale K per sample; ternary weights (TernaryConnect) as two planes; float
    first/last layers, batch norm and ReLU as float ops; BNN+'s real stream around each binary
    layer (``residual``)."""
    from qnnlab.run.evaluate import weight_mode

    torch.manual_seed(0)
    model = build_model(resolve(recipe, {"model": "mlp-small"}), data.ImageData.empty((1, 28, 28), 10)).eval()
    runtime.export(model, tmp_path / "m.qnn", input_shape=(1, 28, 28), input_grid=runtime.PIXELS)
    packed = runtime.load(tmp_path / "m.qnn")
    assert product in [op["op"] for op in packed.ops]
    x = to_unit_range(data.load("fashion-mnist-mini").test_x[:200])
    with torch.no_grad(), weight_mode(model, "binary"):
        expected = model(x)
    got = packed(x)
    off = ~torch.isclose(got, expected, atol=1e-2, rtol=1e-3).all(1)
    assert int(off.sum()) <= flips
    assert torch.equal(got.argmax(1)[~off], expected.argmax(1)[~off])
    assert torch.allclose(packed.reference(x), expected, atol=1e-2, rtol=1e-3)


def _spread_batchnorm(model, means, variances):
    """Batch-norm statistics as training would leave them, so thresholds lie off zero."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(*means)
                m.running_var.uniform_(*variances)
                m.weight.uniform_(-1, 1)
