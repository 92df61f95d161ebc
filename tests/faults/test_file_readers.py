"""Every file reader given truncated, bit-flipped, empty, wrong-type, wrong-shape and newer-version
files, and folders where files belong: one clear error naming the file and the problem. The tests
write these files themselves, in the real formats."""

import gzip
import io
import json
import tarfile

import numpy as np
import pytest
import torch

from qnnlab import data, runtime
from qnnlab.analysis import EnergyTable
from qnnlab.cli import main
from qnnlab.data.idx import write_idx
from qnnlab.run import checkpoint
from qnnlab.run.config import parse_overrides, recipe_values
from qnnlab.sweep import spec as sweep_spec

pytestmark = pytest.mark.bad_input


def refused(call, *words):
    with pytest.raises(ValueError) as info:
        call()
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    return message


# IDX (MNIST layout) -------------------------------------------------------------------------
IDX = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def mnist_folder(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, n in zip(IDX, (20, 20, 10, 10)):
        array = rng.integers(0, 256, (n, 28, 28)) if "images" in name else rng.integers(0, 10, n)
        write_idx(folder / name, array)
    return folder


def _rewrite(path, change):
    payload = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(change(payload)))


IDX_DAMAGE = {
    "truncated gzip": lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
    "bit-flipped gzip": lambda p: p.write_bytes(_flip(p.read_bytes(), 40)),
    "empty file": lambda p: p.write_bytes(b""),
    "plain bytes named .gz": lambda p: p.write_bytes(gzip.decompress(p.read_bytes())),
    "bad magic": lambda p: _rewrite(p, lambda b: b"\x01\x02" + b[2:]),
    "header promises more": lambda p: _rewrite(p, lambda b: b[:-100]),
    "trailing bytes": lambda p: _rewrite(p, lambda b: b + b"\x00" * 7),
    "header only": lambda p: _rewrite(p, lambda b: b[:3]),
    "a folder instead": lambda p: (p.unlink(), p.mkdir()),
}


def _flip(payload: bytes, at: int) -> bytes:
    flipped = bytearray(payload)
    flipped[at] ^= 0xFF
    return bytes(flipped)


@pytest.mark.parametrize("damage", IDX_DAMAGE)
def test_a_damaged_idx_file_is_named(tmp_path, damage):
    folder = mnist_folder(tmp_path)
    IDX_DAMAGE[damage](folder / IDX[0])
    refused(lambda: data.mnist(str(folder), download=False), IDX[0])


@pytest.mark.parametrize(
    "labels, words",
    [
        (np.full(20, 10), ["labels outside 0..9"]),  # a label beyond the classes
        (np.zeros(19), ["do not match"]),  # one label short
        (np.zeros((20, 2)), ["do not match"]),  # labels of the wrong shape
    ],
)
def test_labels_that_do_not_fit_the_images_are_named(tmp_path, labels, words):
    folder = mnist_folder(tmp_path)
    write_idx(folder / IDX[1], labels)
    refused(lambda: data.mnist(str(folder), download=False), *words)


def test_fashion_mnist_files_that_differ_from_the_published_ones_are_named(tmp_path):
    folder = mnist_folder(tmp_path)
    refused(lambda: data.load("fashion-mnist", str(folder), download=False), "SHA-256 mismatch", IDX[0])


# CIFAR-10 binary ----------------------------------------------------------------------------
CIFAR_NAMES = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]


def cifar_archive(tmp_path, batches=None, records=3):
    rng = np.random.default_rng(0)
    batches = batches or {}
    path = tmp_path / "cifar-10-binary.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name in CIFAR_NAMES:
            payload = batches.get(name, bytes(rng.integers(0, 10, (records, 3073)).astype(np.uint8)))
            if payload is None:
                continue
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


CIFAR_DAMAGE = {
    "a record cut short": ({"data_batch_2.bin": bytes(3073 * 2 + 100)}, "whole number"),
    "an empty batch": ({"test_batch.bin": b""}, "whole number"),
    "label 10": ({"data_batch_1.bin": bytes([10]) + bytes(3072)}, "label 10 > 9"),
    "a batch missing": ({"test_batch.bin": None}, "missing test_batch.bin"),
}


@pytest.mark.parametrize("damage", CIFAR_DAMAGE)
def test_a_damaged_cifar_batch_is_named(tmp_path, damage):
    batches, words = CIFAR_DAMAGE[damage]
    archive = cifar_archive(tmp_path, batches)
    refused(lambda: data.cifar10(str(tmp_path), download=False), str(archive), words)


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.99])
def test_a_truncated_cifar_archive_is_named(tmp_path, cut):
    archive = cifar_archive(tmp_path, records=50)
    payload = archive.read_bytes()
    archive.write_bytes(payload[: int(len(payload) * cut)])
    refused(lambda: data.cifar10(str(tmp_path), download=False), str(archive))


def test_a_text_file_named_like_the_cifar_archive_is_named(tmp_path):
    (tmp_path / "cifar-10-binary.tar.gz").write_text("not an archive")
    refused(lambda: data.cifar10(str(tmp_path), download=False), "cifar-10-binary.tar.gz")


# SVHN .mat ----------------------------------------------------------------------------------
def svhn_folder(tmp_path, x=None, y=None):
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    for name in ("train_32x32.mat", "test_32x32.mat"):
        savemat(
            tmp_path / name,
            {
                "X": rng.integers(0, 256, (32, 32, 3, 5)).astype(np.uint8) if x is None else x,
                "y": rng.integers(1, 11, (5, 1)).astype(np.uint8) if y is None else y,
            },
        )
    return tmp_path


SVHN_DAMAGE = {
    "label 0": (None, np.zeros((5, 1), np.uint8), "labels"),
    "label 11": (None, np.full((5, 1), 11, np.uint8), "labels"),
    "negative label": (None, np.full((5, 1), -3, np.int16), "labels"),
    "pixels as fractions": (np.full((32, 32, 3, 5), 0.5), None, "pixels"),
    "pixels beyond 255": (np.full((32, 32, 3, 5), 300, np.uint16), None, "pixels"),
    "images of another size": (np.zeros((28, 28, 3, 5), np.uint8), None, "X (32, 32, 3, N)"),
    "fewer labels": (None, np.ones((4, 1), np.uint8), "labels"),
}


@pytest.mark.parametrize("damage", SVHN_DAMAGE)
def test_an_svhn_file_with_wrong_contents_is_named(tmp_path, damage):
    x, y, words = SVHN_DAMAGE[damage]
    svhn_folder(tmp_path, x, y)
    refused(lambda: data.svhn(str(tmp_path), download=False), "train_32x32.mat", words)


@pytest.mark.parametrize("cut", [0, 100, 0.5])
def test_a_truncated_svhn_file_is_named(tmp_path, cut):
    svhn_folder(tmp_path)
    path = tmp_path / "train_32x32.mat"
    payload = path.read_bytes()
    path.write_bytes(payload[: int(len(payload) * cut) if isinstance(cut, float) else cut])
    refused(lambda: data.svhn(str(tmp_path), download=False), "train_32x32.mat")


# Text corpora -------------------------------------------------------------------------------
@pytest.mark.parametrize("content", [b"", b"\xff\xfe not utf-8", b"To be or not", b"\x00" * 500])
def test_a_shakespeare_file_that_is_not_the_corpus_is_named(tmp_path, content):
    (tmp_path / "input.txt").write_bytes(content)
    refused(lambda: data.tinyshakespeare(str(tmp_path), download=False), "input.txt")


PTB_DAMAGE = {
    "not utf-8": ({"ptb.train.txt": b"\xff\xfe\xfd"}, "not UTF-8"),
    "unknown test words": ({"ptb.test.txt": b"zebra quokka\n"}, "not in the training vocabulary"),
    "too many words": ({"ptb.train.txt": " ".join(f"w{i}" for i in range(10_050)).encode()}, "distinct words"),
}


@pytest.mark.parametrize("damage", PTB_DAMAGE)
def test_a_penn_treebank_file_that_is_not_the_corpus_is_named(tmp_path, damage):
    files, words = PTB_DAMAGE[damage]
    for split in ("train", "valid", "test"):
        (tmp_path / f"ptb.{split}.txt").write_bytes(files.get(f"ptb.{split}.txt", b"the cat sat\n"))
    refused(lambda: data.penn_treebank(str(tmp_path), download=False), *words)


# Image folders ------------------------------------------------------------------------------
def image_tree(tmp_path, extra=None):
    from PIL import Image

    for split in ("train", "val"):
        for label in ("cat", "dog"):
            folder = tmp_path / split / label
            folder.mkdir(parents=True)
            Image.new("RGB", (8, 8), (10, 20, 30)).save(folder / "a.png")
    for name, payload in (extra or {}).items():
        target = tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(payload) if isinstance(payload, bytes) else payload(target)
    return tmp_path


def _bomb(path):
    from PIL import Image

    Image.new("1", (16000, 16000)).save(path)  # 256 Mpixel, a few kB compressed


IMAGE_DAMAGE = {
    "an empty image": ({"train/cat/b.png": b""}, "train/cat/b.png"),
    "text named .jpg": ({"train/dog/b.jpg": b"hello"}, "train/dog/b.jpg"),
    "a truncated png": ({"val/cat/b.png": lambda p: p.write_bytes((p.parent / "a.png").read_bytes()[:30])}, "b.png"),
    "a decompression bomb": ({"train/cat/bomb.png": _bomb}, "bomb.png"),
    "a folder named .png": ({"train/cat/dir.png/x": b""}, "dir.png"),
}


@pytest.mark.parametrize("damage", IMAGE_DAMAGE)
def test_a_bad_image_in_a_folder_is_named_when_read(tmp_path, damage):
    files, words = IMAGE_DAMAGE[damage]
    folder = data.image_folder(str(image_tree(tmp_path, files)), size=8)
    refused(lambda: (folder.train_x[:], folder.test_x[:]), words)


@pytest.mark.parametrize(
    "layout, words",
    [
        ({"train": None}, "expected train/<class>/"),
        ({"val/bird": "dir"}, "classes missing from train/"),
        ({"train/cat": None, "train/dog": None, "val/cat": None, "val/dog": None}, "train/ has no class folders"),
    ],
)
def test_a_folder_tree_of_the_wrong_shape_is_named(tmp_path, layout, words):
    import shutil

    image_tree(tmp_path)
    for name, what in layout.items():
        shutil.rmtree(tmp_path / name) if what is None else (tmp_path / name).mkdir()
    refused(lambda: data.image_folder(str(tmp_path), size=8), words)


def test_image_folders_without_pillow_say_what_to_install(tmp_path, monkeypatch):
    import sys

    folder = data.image_folder(str(image_tree(tmp_path)), size=8)
    monkeypatch.setitem(sys.modules, "PIL", None)
    refused(lambda: folder.train_x[0], "Pillow", "pip install")


# Recipe and sweep files, --set overrides ----------------------------------------------------
YAML_DAMAGE = {
    "not yaml": "epochs: [1, 2\n",
    "a list": "- bnn\n- float\n",
    "a tab": "epochs:\t3\n\tlr: 1\n",
    "binary": "\x00\x01\x02",
}


@pytest.mark.parametrize("damage", YAML_DAMAGE)
def test_a_recipe_file_that_is_not_a_mapping_is_named(tmp_path, damage):
    (tmp_path / "r.yaml").write_text(YAML_DAMAGE[damage])
    refused(lambda: recipe_values(str(tmp_path / "r.yaml")), "r.yaml")


@pytest.mark.parametrize("text, words", [("epochs: 2\nwidth_of_moon: 3\n", "width_of_moon"), ("lr: fast\n", "lr")])
def test_a_recipe_with_an_unknown_field_or_wrong_type_is_named(tmp_path, text, words):
    (tmp_path / "r.yaml").write_text(text)
    refused(lambda: data_free_resolve(tmp_path / "r.yaml"), words)


def data_free_resolve(path):
    from qnnlab.run import resolve

    return resolve(str(path))


def test_a_recipe_path_that_is_a_folder_is_named(tmp_path):
    (tmp_path / "r.yaml").mkdir()
    refused(lambda: recipe_values(str(tmp_path / "r.yaml")), "r.yaml")


SWEEP_DAMAGE = {
    "not yaml": ("base: {recipe: bnn\n", "sweep"),
    "unknown top-level key": ("base: {recipe: bnn}\naxes: {lr: [1]}\n", "axes"),
    "unknown field": ("base: {recipe: bnn, epoks: 1}\n", "epoks"),
    "empty axis": ("base: {recipe: bnn}\ngrid: {lr: {}}\n", "lr"),
    "wrong type": ("base: {recipe: bnn}\ngrid: {epochs: {a: one}}\n", "epochs"),
    "seeds zero": ("base: {recipe: bnn}\nseeds: 0\n", "seeds"),
    "zip of unequal lengths": ("base: {recipe: bnn}\nzip: {lr: {a: 0.1}, epochs: {a: 1, b: 2}}\n", "zip"),
    "a list": ("- bnn\n", "sweep"),
}


@pytest.mark.parametrize("damage", SWEEP_DAMAGE)
def test_a_malformed_sweep_file_names_the_problem(tmp_path, damage):
    text, words = SWEEP_DAMAGE[damage]
    (tmp_path / "s.yaml").write_text(text)
    refused(lambda: sweep_spec.load(tmp_path / "s.yaml"), words)


@pytest.mark.parametrize("pair", ["lr", "=3", "lr=[1, 2", "lr:0.1"])
def test_a_malformed_override_is_named(pair):
    refused(lambda: parse_overrides([pair]), pair)


@pytest.mark.parametrize(
    "pair", ["epochs=true", "epochs=-1", "lr=fast", "batch_size=0", "optimizer=adamw2", "norm=maybe"]
)
def test_an_override_of_the_wrong_value_is_named_before_training(tmp_path, capsys, pair):
    argv = ["train", "--recipe", "bnn", "--model", "mlp-small", "--dataset", "fashion-mnist-mini"]
    assert main([*argv, "--out", str(tmp_path / "run"), "--set", pair]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and pair.split("=")[0] in err
    assert not (tmp_path / "run").exists()


# Energy tables ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, words",
    [
        ("fp32_add -1\n", "must be >= 0"),
        ("fp32_add many\n", "expected 'name value_pJ'"),
        ("fp64_fma 3\n", "unknown entry"),
        ("fp32_add nan\n", "expected"),
        ("fp32_add 1e400\n", "finite"),
        ("fp32_add 1 2\n", "expected"),
    ],
)
def test_a_malformed_energy_table_names_the_line(tmp_path, text, words):
    (tmp_path / "e.txt").write_text(text)
    refused(lambda: EnergyTable.from_file(tmp_path / "e.txt"), "e.txt", words)


def test_an_energy_table_that_is_a_folder_is_named(tmp_path):
    refused(lambda: EnergyTable.from_file(tmp_path), str(tmp_path))


# Checkpoints and packed model files ---------------------------------------------------------
@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "c.safetensors"
    checkpoint.save(path, {"w": torch.ones(64)}, {"opt": {"m": torch.zeros(3)}}, {"epoch": 0})
    return path


def _cut(path, keep):
    payload = path.read_bytes()
    path.write_bytes(payload[: int(len(payload) * keep)])


def _header_flip(path):
    path.write_bytes(_flip(path.read_bytes(), 12))


def _newer(path, fmt, version):
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), "pt") as f:
        tensors, metadata = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    save_file(tensors, str(path), metadata={**metadata, "version": str(version)})


FILE_DAMAGE = {
    "empty": (lambda p: p.write_bytes(b""), "not a readable safetensors"),
    "truncated to 10%": (lambda p: _cut(p, 0.1), "not a readable safetensors"),
    "truncated to 90%": (lambda p: _cut(p, 0.9), "not a readable safetensors"),
    "header bit-flipped": (_header_flip, "not a readable safetensors"),
    "last byte flipped": (lambda p: p.write_bytes(_flip(p.read_bytes(), -1)), "checksum"),
    "a json file": (lambda p: p.write_text(json.dumps({"epoch": 1})), "not a readable safetensors"),
    "a folder": (lambda p: (p.unlink(), p.mkdir()), "folder"),
}


@pytest.mark.parametrize("damage", FILE_DAMAGE)
def test_a_damaged_checkpoint_is_named(saved, damage):
    change, words = FILE_DAMAGE[damage]
    change(saved)
    refused(lambda: checkpoint.load(saved), words)


def test_a_newer_checkpoint_asks_for_an_upgrade(saved):
    _newer(saved, checkpoint.FORMAT, checkpoint.VERSION + 1)
    refused(lambda: checkpoint.load(saved), "upgrade qnnlab")


@pytest.fixture
def packed_file(tmp_path):
    from qnnlab.data import ImageData
    from qnnlab.run import build_model, resolve

    model = build_model(resolve("bnn", {"model": "mlp-small"}), ImageData.empty((1, 28, 28), 10)).eval()
    runtime.export(model, tmp_path / "m.qnn", input_shape=(1, 28, 28), input_grid=runtime.PIXELS)
    return tmp_path / "m.qnn"


@pytest.mark.parametrize("damage", FILE_DAMAGE)
def test_a_damaged_packed_model_is_named(packed_file, damage):
    change, words = FILE_DAMAGE[damage]
    change(packed_file)
    refused(lambda: runtime.load(packed_file), words)


def test_a_newer_packed_model_asks_for_an_upgrade(packed_file):
    _newer(packed_file, runtime.FORMAT, runtime.VERSION + 1)
    refused(lambda: runtime.load(packed_file), "upgrade qnnlab")


def test_a_checkpoint_given_as_a_packed_model_is_named(saved):
    refused(lambda: runtime.load(saved), "not a qnnlab-packed file")


# Run folders --------------------------------------------------------------------------------
RUN_FOLDERS = {
    "eval of an empty folder": (["eval", "{dir}"], "{dir}"),
    "eval of a missing folder": (["eval", "{dir}/none"], "does not exist"),
    "export of an empty folder": (["export", "{dir}", "{dir}/m.qnn"], "{dir}"),
    "sweep status without a plan": (["sweep", "status", "{dir}"], "sweep.json"),
    "sweep table without a plan": (["sweep", "table", "{dir}"], "sweep.json"),
    "report of a folder without records": (["report", "{dir}", "--out", "{dir}/r.html"], "{dir}"),
}


@pytest.mark.parametrize("case", RUN_FOLDERS)
def test_a_folder_without_what_a_command_needs_is_named(tmp_path, capsys, case):
    argv, words = RUN_FOLDERS[case]
    assert main([a.format(dir=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words.format(dir=tmp_path) in err


@pytest.mark.parametrize("content", ["{not json", "[]", '{"runs": 5}', ""])
def test_a_damaged_sweep_plan_is_named(tmp_path, capsys, content):
    (tmp_path / "sweep.json").write_text(content)
    assert main(["sweep", "status", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sweep.json" in err
