"""Data sets by name: ``qnnlab.data.load("fashion-mnist")``."""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path

from qnnlab.data.errors import DatasetError
from qnnlab.data.folder import image_folder
from qnnlab.data.text import TextData, penn_treebank, tinyshakespeare
from qnnlab.data.vision import FASHION_FILES, ImageData, cifar10, fashion_mnist, load_idx_set, mnist, svhn


def fashion_mnist_mini(root: str | None = None, download: bool = False) -> ImageData:
    """Stratified Fashion-MNIST subset (10,000 train / 2,000 test, 1,000 / 200 per class) shipped in
    the package; made by scripts/make_fashion_mnist_mini.py."""
    folder = Path(str(resources.files("qnnlab.data") / "embedded" / "fashion-mnist-mini"))
    files = [type(f)(f.name, f.url) for f in FASHION_FILES]  # a subset: the full set's checksums do not apply
    data = load_idx_set("fashion-mnist-mini", files, {f.name: folder / f.name for f in files})
    data.name = "fashion-mnist-mini"
    return data


LOADERS: dict[str, Callable[..., ImageData | TextData]] = {
    "mnist": mnist,
    "fashion-mnist": fashion_mnist,
    "fashion-mnist-mini": fashion_mnist_mini,
    "cifar10": cifar10,
    "svhn": svhn,
    "ptb": penn_treebank,
    "tinyshakespeare": tinyshakespeare,
    "imagefolder": image_folder,
}


def available() -> list[str]:
    return sorted(LOADERS)


def load(name: str, root: str | None = None, download: bool = True, image_size: int = 224) -> ImageData | TextData:
    """Data set ``name``; ``image_size`` applies to ``imagefolder`` (resize and centre crop)."""
    if name not in LOADERS:
        raise DatasetError(f"unknown data set {name!r}; known: {', '.join(available())}")
    if name == "imagefolder":
        return image_folder(root, image_size)
    return LOADERS[name](root, download=download)


__all__ = ["DatasetError", "ImageData", "TextData", "available", "load"]
