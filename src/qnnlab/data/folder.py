"""ImageNet-style folders: ROOT/train/<class>/<image> and ROOT/val/<class>/<image> (or test/).

Too large for memory, so images are decoded when a batch asks for them (a thread pool; Pillow
releases the GIL while decoding): the shorter side resized to ``size``, then a centre crop of
size x size, as uint8 RGB. The object looks like the in-memory data sets to the trainer.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from qnnlab.data.errors import DatasetError
from qnnlab.data.vision import ImageData

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff"}


class LazyImages:
    """uint8 (N, 3, S, S) images decoded on indexing (an int, a slice or a tensor of indices)."""

    dtype = torch.uint8

    def __init__(self, files: list[Path], size: int) -> None:
        self.files, self.size = files, size

    def __len__(self) -> int:
        return len(self.files)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.files), 3, self.size, self.size)

    def dim(self) -> int:
        return 4

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, slice):
            positions = list(range(len(self.files)))[index]
        elif isinstance(index, torch.Tensor):
            positions = index.reshape(-1).tolist()
        else:
            return self._decode(self.files[int(index)])
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            images = list(pool.map(lambda i: self._decode(self.files[i]), positions))
        return torch.stack(images) if images else torch.zeros(0, 3, self.size, self.size, dtype=torch.uint8)

    def _decode(self, path: Path) -> torch.Tensor:
        try:
            from PIL import Image, UnidentifiedImageError
        except ImportError:
            raise DatasetError("image folders are decoded with Pillow: pip install 'qnnlab[imagefolder]'") from None

        try:
            with Image.open(path) as image:
                image = image.convert("RGB")
                scale = self.size / min(image.size)
                width, height = max(self.size, round(image.width * scale)), max(self.size, round(image.height * scale))
                image = image.resize((width, height), Image.BILINEAR)
                left, top = (width - self.size) // 2, (height - self.size) // 2
                image = image.crop((left, top, left + self.size, top + self.size))
                return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError) as exc:
            raise DatasetError(f"{path}: not a readable image ({exc}); remove or replace it") from None


class FolderData(ImageData):
    """An ImageData whose images are LazyImages."""

    def __post_init__(self) -> None:
        for split, labels in (("train", self.train_y), ("test", self.test_y)):
            if len(labels) and int(labels.max()) >= self.classes:
                raise DatasetError(f"{self.name} {split}: a label outside the {self.classes} classes")


def _listing(folder: Path, classes: list[str]) -> tuple[list[Path], list[int]]:
    files, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((folder / name).iterdir()) if (folder / name).is_dir() else []:
            if path.suffix.lower() in EXTENSIONS:
                files.append(path)
                labels.append(label)
    return files, labels


def image_folder(root: str | None, size: int = 224, download: bool = False) -> FolderData:
    """ROOT/train/<class>/* for training and ROOT/val/<class>/* (or ROOT/test) for testing."""
    if not root:
        raise DatasetError("imagefolder needs --data-root DIR with DIR/train/<class>/ and DIR/val/<class>/ images")
    base = Path(root)
    train_dir = base / "train"
    test_dir = next((base / s for s in ("val", "test") if (base / s).is_dir()), None)
    if not train_dir.is_dir() or test_dir is None:
        raise DatasetError(f"{base}: expected train/<class>/ and val/<class>/ (or test/<class>/) folders of images")
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    extra = sorted(p.name for p in test_dir.iterdir() if p.is_dir() and p.name not in classes)
    if not classes or extra:
        raise DatasetError(
            f"{base}: "
            + (
                f"{test_dir.name}/ has classes missing from train/: {extra[:3]}"
                if extra
                else "train/ has no class folders"
            )
        )
    train_files, train_labels = _listing(train_dir, classes)
    test_files, test_labels = _listing(test_dir, classes)
    if not train_files or not test_files:
        raise DatasetError(f"{base}: no images ({', '.join(sorted(EXTENSIONS))}) under train/ or {test_dir.name}/")
    return FolderData(
        f"imagefolder:{base.name}",
        LazyImages(train_files, size),
        torch.tensor(train_labels),
        LazyImages(test_files, size),
        torch.tensor(test_labels),
        len(classes),
    )
