"""ImageNet-style folders: lazy decoding, resize and crop, training on them, clear errors."""

import numpy as np
import pytest
import torch
from PIL import Image

from qnnlab import data
from qnnlab.data import DatasetError
from qnnlab.train import Trainer, resolve


def make_folder(root, per_class=6, classes=("cat", "dog"), splits=("train", "val")):
    rng = np.random.default_rng(0)
    for split in splits:
        for label, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class if split == "train" else 2):
                size = (20 + 3 * i, 14 + 2 * i)
                pixels = np.full((size[1], size[0], 3), 200 * label, dtype=np.uint8) + rng.integers(
                    0, 40, (size[1], size[0], 3), dtype=np.uint8
                )
                Image.fromarray(pixels).save(folder / f"{i}.png")
    (root / "train" / "cat" / "notes.txt").write_text("not an image, skipped by extension")
    return root


def test_images_are_decoded_resized_and_cropped(tmp_path):
    d = data.load("imagefolder", str(make_folder(tmp_path)), image_size=12)
    assert d.shape == (3, 12, 12) and d.classes == 2 and len(d.train_y) == 12 and len(d.test_y) == 4
    batch = d.train_x[torch.tensor([0, 7])]
    assert batch.dtype == torch.uint8 and batch.shape == (2, 3, 12, 12)
    assert d.train_y[7] == 1 and batch[1].float().mean() > batch[0].float().mean()  # the "dog" images are bright
    assert d.test_x[0:4].shape == (4, 3, 12, 12)


def test_training_on_a_folder(tmp_path):
    root = make_folder(tmp_path / "imgs")
    config = resolve(
        "bnn",
        {
            "model": "mlp-small",
            "dataset": "imagefolder",
            "data_root": str(root),
            "image_size": 12,
            "epochs": 2,
            "batch_size": 4,
            "threads": 1,
        },
    )
    metrics = Trainer(config, tmp_path / "run", quiet=True).run()
    assert len(metrics) == 2 and 0.0 <= metrics[-1]["test_accuracy"] <= 1.0


def test_folder_errors(tmp_path):
    with pytest.raises(DatasetError, match="--data-root"):
        data.load("imagefolder")
    with pytest.raises(DatasetError, match="train/<class>"):
        data.load("imagefolder", str(tmp_path))
    root = make_folder(tmp_path / "a")
    (root / "val" / "bird").mkdir()
    with pytest.raises(DatasetError, match="missing from train"):
        data.load("imagefolder", str(root))
    root = make_folder(tmp_path / "b")
    (root / "train" / "dog" / "9.png").write_bytes(b"not a png")
    d = data.load("imagefolder", str(root), image_size=8)
    with pytest.raises(DatasetError, match="9.png: not a readable image"):
        d.train_x[torch.arange(len(d.train_y))]
