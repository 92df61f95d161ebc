"""Data set parsers on real files (Fashion-MNIST, Tiny Shakespeare) and on small files written in
the real CIFAR-10 / SVHN / PTB / IDX formats; missing and broken files give clear errors."""

import gzip
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from qnnlab import data
from qnnlab.data import DatasetError
from qnnlab.data.idx import parse_idx, write_idx
from qnnlab.data.vision import FASHION_SYSTEM_DIR, IDX_NAMES

from conftest import needs_shakespeare, shakespeare_root

HAVE_FASHION = Path(FASHION_SYSTEM_DIR, IDX_NAMES[0]).is_file()


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("QNNLAB_OFFLINE", "1")
    monkeypatch.setenv("QNNLAB_DATA", str(tmp_path / "cache"))


@pytest.mark.skipif(not HAVE_FASHION, reason="apt-get install dataset-fashion-mnist (make test does)")
def test_fashion_mnist_from_the_debian_package():
    d = data.load("fashion-mnist")
    assert d.train_x.shape == (60000, 1, 28, 28) and d.test_x.shape == (10000, 1, 28, 28)
    assert torch.equal(torch.bincount(d.train_y), torch.full((10,), 6000))


def test_embedded_mini_is_stratified_and_offline():
    d = data.load("fashion-mnist-mini")
    assert d.train_x.shape == (10000, 1, 28, 28) and d.test_x.shape == (2000, 1, 28, 28)
    assert torch.equal(torch.bincount(d.train_y), torch.full((10,), 1000))
    assert torch.equal(torch.bincount(d.test_y), torch.full((10,), 200))


def write_mnist_like(folder: Path, n_train=20, n_test=10):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for name, n, kind in zip(IDX_NAMES, (n_train, n_train, n_test, n_test), ("x", "y", "x", "y")):
        arr = rng.integers(0, 256, (n, 28, 28)) if kind == "x" else rng.integers(0, 10, n)
        write_idx(folder / name, arr)


def test_mnist_from_a_user_root(tmp_path):
    write_mnist_like(tmp_path / "m")
    d = data.load("mnist", root=str(tmp_path / "m"))
    assert d.train_x.shape == (20, 1, 28, 28) and d.test_y.shape == (10,)


def test_missing_dataset_says_where_it_looked_and_how_to_get_it(tmp_path):
    with pytest.raises(DatasetError) as info:
        data.load("mnist", root=str(tmp_path / "nowhere"))
    message = str(info.value)
    assert str(tmp_path / "nowhere") in message and "--data-root" in message and "QNNLAB_OFFLINE" in message


def test_truncated_idx_is_named(tmp_path):
    write_mnist_like(tmp_path / "m")
    path = tmp_path / "m" / IDX_NAMES[0]
    payload = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(payload[:-100]))
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        data.load("mnist", root=str(tmp_path / "m"))
    path.write_bytes(path.read_bytes()[:50])  # a cut gzip stream
    with pytest.raises(DatasetError, match=IDX_NAMES[0]):
        data.load("mnist", root=str(tmp_path / "m"))


def test_idx_header_checks():
    with pytest.raises(DatasetError, match="magic"):
        parse_idx(b"\x01\x02\x08\x01", "f")
    with pytest.raises(DatasetError, match="truncated IDX header"):
        parse_idx(b"\x00\x00\x08\x03\x00", "f")


def test_fashion_mnist_payload_checksum_detects_a_changed_file(tmp_path):
    write_mnist_like(tmp_path / "f")  # right format, wrong contents
    with pytest.raises(DatasetError, match="SHA-256 mismatch"):
        data.load("fashion-mnist", root=str(tmp_path / "f"))


def write_cifar(path: Path, per_batch=3, corrupt=False):
    rng = np.random.default_rng(0)
    with tarfile.open(path, "w:gz") as tar:
        for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
            records = rng.integers(0, 256, (per_batch, 3073)).astype(np.uint8)
            records[:, 0] = rng.integers(0, 10, per_batch)
            payload = records.tobytes()[:-5] if corrupt and name == "test_batch.bin" else records.tobytes()
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return records


def test_cifar10_binary_format(tmp_path):
    last = write_cifar(tmp_path / "cifar-10-binary.tar.gz")
    d = data.load("cifar10", root=str(tmp_path))
    assert d.train_x.shape == (15, 3, 32, 32) and d.test_x.shape == (3, 3, 32, 32)
    assert torch.equal(d.test_x[0].flatten(), torch.from_numpy(last[0, 1:]))
    write_cifar(tmp_path / "cifar-10-binary.tar.gz", corrupt=True)
    with pytest.raises(DatasetError, match="3073-byte"):
        data.load("cifar10", root=str(tmp_path))


def test_svhn_mat_format(tmp_path):
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    for name, n in (("train_32x32.mat", 6), ("test_32x32.mat", 4)):
        x = rng.integers(0, 256, (32, 32, 3, n)).astype(np.uint8)
        savemat(tmp_path / name, {"X": x, "y": np.array([[10], [1], [2], [3], [4], [5]][:n], dtype=np.uint8)})
    d = data.load("svhn", root=str(tmp_path))
    assert d.train_x.shape == (6, 3, 32, 32) and d.train_y.tolist() == [0, 1, 2, 3, 4, 5]
    (tmp_path / "test_32x32.mat").write_bytes(b"not a mat file")
    with pytest.raises(DatasetError, match="MATLAB"):
        data.load("svhn", root=str(tmp_path))


@needs_shakespeare
def test_tiny_shakespeare_characters():
    d = data.load("tinyshakespeare", root=shakespeare_root())
    assert d.vocab_size == 65 and d.unit == "char"
    assert len(d.train) + len(d.valid) == 1115394
    assert "".join(d.vocab[i] for i in d.train[:9].tolist()) == "First Cit"


def test_tiny_shakespeare_checksum(tmp_path):
    (tmp_path / "input.txt").write_text("x" * 1000)
    with pytest.raises(DatasetError, match="SHA-256"):
        data.load("tinyshakespeare", root=str(tmp_path))


def test_penn_treebank_words(tmp_path):
    (tmp_path / "ptb.train.txt").write_text(" the cat sat \n the <unk> ran \n")
    (tmp_path / "ptb.valid.txt").write_text(" the cat ran \n")
    (tmp_path / "ptb.test.txt").write_text(" cat sat \n")
    d = data.load("ptb", root=str(tmp_path))
    assert d.vocab == sorted(["the", "cat", "sat", "<unk>", "ran", "<eos>"])
    assert [d.vocab[i] for i in d.valid.tolist()] == ["the", "cat", "ran", "<eos>"]
    (tmp_path / "ptb.test.txt").write_text(" dog \n")
    with pytest.raises(DatasetError, match="not in the training vocabulary"):
        data.load("ptb", root=str(tmp_path))


def test_unknown_dataset():
    with pytest.raises(DatasetError, match="known: "):
        data.load("imagenet21k")
