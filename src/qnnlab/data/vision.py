"""Image classification data sets, loaded whole into memory as uint8 tensors (N, C, H, W)."""

from __future__ import annotations

import dataclasses
import tarfile
from pathlib import Path

import numpy as np
import torch

from qnnlab.data.errors import DatasetError
from qnnlab.data.idx import parse_idx, read_bytes
from qnnlab.data.sources import RemoteFile, check_payload, locate


@dataclasses.dataclass
class ImageData:
    """Train and test images (uint8, N x C x H x W) with integer labels."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: int

    def __post_init__(self) -> None:
        for split, x, y in (("train", self.train_x, self.train_y), ("test", self.test_x, self.test_y)):
            if x.dim() != 4 or x.dtype != torch.uint8 or len(x) != len(y):
                raise DatasetError(f"{self.name} {split}: images must be uint8 (N, C, H, W) with one label each")
            if len(y) and (int(y.min()) < 0 or int(y.max()) >= self.classes):
                raise DatasetError(f"{self.name} {split}: labels outside 0..{self.classes - 1}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])

    @classmethod
    def empty(cls, shape: tuple[int, ...], classes: int, name: str = "shape") -> ImageData:
        """No images, only their shape (C, H, W) and the class count: enough to build a model."""
        no_images, no_labels = torch.zeros(0, *shape, dtype=torch.uint8), torch.zeros(0, dtype=torch.long)
        return cls(name, no_images, no_labels, no_images, no_labels, classes)


MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
IDX_NAMES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
MNIST_FILES = [
    RemoteFile(n, MNIST_URL + n, "md5:" + h)
    for n, h in zip(
        IDX_NAMES,
        (
            "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "d53e105ee54ea40749a09fcbcd1e9432",
            "9fb629c4189551a2d022fa330f9573f3",
            "ec29112dd5afa0611ce80d1b7f02629c",
        ),
    )
]
# payload SHA-256 values computed from the decompressed files of Debian's dataset-fashion-mnist,
# which carries the published data re-compressed; md5 values are the publisher's, of the .gz files
FASHION_FILES = [
    RemoteFile(n, FASHION_URL + n, "md5:" + h, s)
    for n, h, s in zip(
        IDX_NAMES,
        (
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "25c81989df183df01b3e8a0aad5dffbe",
            "bef4ecab320f06d8554ea6380940ec79",
            "bb300cfdad3c16e7a12a480ee83cd310",
        ),
        (
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        ),
    )
]
FASHION_SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"


def load_idx_set(name: str, files: list[RemoteFile], paths: dict[str, Path]) -> ImageData:
    arrays = []
    for f in files:
        payload = read_bytes(paths[f.name])
        check_payload(f, paths[f.name], payload)
        arrays.append(parse_idx(payload, str(paths[f.name])))
    train_x, train_y, test_x, test_y = arrays
    for images, labels, split in ((train_x, train_y, "train"), (test_x, test_y, "test")):
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DatasetError(f"{name} {split}: {images.shape} images do not match {labels.shape} labels")
    as_images = lambda a: torch.from_numpy(a.copy()).unsqueeze(1)  # noqa: E731
    as_labels = lambda a: torch.from_numpy(a.astype(np.int64))  # noqa: E731
    return ImageData(name, as_images(train_x), as_labels(train_y), as_images(test_x), as_labels(test_y), 10)


def mnist(root: str | None = None, download: bool = True) -> ImageData:
    return load_idx_set("mnist", MNIST_FILES, locate("mnist", MNIST_FILES, root, download=download))


def fashion_mnist(root: str | None = None, download: bool = True) -> ImageData:
    paths = locate(
        "fashion-mnist",
        FASHION_FILES,
        root,
        [FASHION_SYSTEM_DIR],
        download,
        hint="on Debian: apt-get install dataset-fashion-mnist",
    )
    return load_idx_set("fashion-mnist", FASHION_FILES, paths)


CIFAR_FILES = [
    RemoteFile(
        "cifar-10-binary.tar.gz",
        "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
        "md5:c32a1d4ab5d03f1284b67883e8d87530",
    )
]
CIFAR_RECORD = 1 + 3 * 32 * 32


def _cifar_batch(data: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    if len(data) == 0 or len(data) % CIFAR_RECORD:
        raise DatasetError(
            f"{source}: {len(data)} bytes is not a whole number of {CIFAR_RECORD}-byte "
            f"CIFAR-10 records; the file is truncated or corrupt"
        )
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, CIFAR_RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise DatasetError(f"{source}: label {labels.max()} > 9; not a CIFAR-10 binary batch")
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


def cifar10(root: str | None = None, download: bool = True) -> ImageData:
    """CIFAR-10, binary version (no pickle): 5 training batches and a test batch of 10,000 records
    of one label byte and 3072 pixel bytes (R, G, B planes). Krizhevsky 2009."""
    archive = locate("cifar10", CIFAR_FILES, root, download=download)["cifar-10-binary.tar.gz"]
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            missing = [n for n in names if n not in members]
            if missing:
                raise DatasetError(f"{archive}: missing {', '.join(missing)}; not the CIFAR-10 binary archive")
            batches = [_cifar_batch(tar.extractfile(members[n]).read(), f"{archive}:{n}") for n in names]
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DatasetError(f"{archive}: cannot be read ({exc}); corrupt or truncated, fetch it again") from None
    train_x = np.concatenate([b[0] for b in batches[:5]])
    train_y = np.concatenate([b[1] for b in batches[:5]])
    test_x, test_y = batches[5]
    return ImageData(
        "cifar10",
        torch.from_numpy(train_x.copy()),
        torch.from_numpy(train_y),
        torch.from_numpy(test_x.copy()),
        torch.from_numpy(test_y),
        10,
    )


SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"
SVHN_FILES = [
    RemoteFile("train_32x32.mat", SVHN_URL + "train_32x32.mat", "md5:e26dedcc434d2e4c54c9b2d4a06d8373"),
    RemoteFile("test_32x32.mat", SVHN_URL + "test_32x32.mat", "md5:eb5a983be6a315427106f1b164d9cef3"),
]


def _svhn_split(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        from scipy.io import loadmat
    except ImportError:
        raise DatasetError("SVHN's .mat files need scipy: pip install 'qnnlab[svhn]'") from None

    try:
        mat = loadmat(path)
    except Exception as exc:  # noqa: BLE001 - scipy raises several kinds for a broken file
        raise DatasetError(
            f"{path}: not a readable MATLAB file ({exc}); corrupt or truncated, fetch it again"
        ) from None
    if "X" not in mat or "y" not in mat or mat["X"].shape[:3] != (32, 32, 3):
        raise DatasetError(f"{path}: expected X (32, 32, 3, N) and y (N, 1), the SVHN cropped-digit format")
    pixels, labels = mat["X"], mat["y"].reshape(-1)
    if pixels.dtype != np.uint8 and not (
        np.issubdtype(pixels.dtype, np.integer) and pixels.size and pixels.min() >= 0 and pixels.max() <= 255
    ):
        raise DatasetError(f"{path}: pixels are {pixels.dtype}, not 8-bit values 0..255; not the SVHN release")
    if not np.issubdtype(labels.dtype, np.integer) or labels.size and (labels.min() < 1 or labels.max() > 10):
        raise DatasetError(f"{path}: labels must be the digits 1..10 (10 for the digit 0); not the SVHN release")
    x = np.ascontiguousarray(pixels.transpose(3, 2, 0, 1), dtype=np.uint8)
    y = labels.astype(np.int64) % 10  # SVHN labels the digit 0 as 10
    if len(y) != len(x):
        raise DatasetError(f"{path}: {len(x)} images but {len(y)} labels")
    return torch.from_numpy(x), torch.from_numpy(y)


def svhn(root: str | None = None, download: bool = True) -> ImageData:
    """SVHN cropped digits (format 2, .mat files); the extra split is not used. Netzer et al. 2011."""
    paths = locate("svhn", SVHN_FILES, root, download=download)
    train_x, train_y = _svhn_split(paths["train_32x32.mat"])
    test_x, test_y = _svhn_split(paths["test_32x32.mat"])
    return ImageData("svhn", train_x, train_y, test_x, test_y, 10)
