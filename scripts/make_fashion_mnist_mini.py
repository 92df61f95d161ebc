"""Build the embedded ``fashion-mnist-mini`` data set shipped inside the package.

A stratified subset of Fashion-MNIST: the first ``--train-per-class`` training images and the
first ``--test-per-class`` test images of each class in a seeded random order, written as
gzip-compressed IDX files (the format of the original), so the main job runs offline anywhere.

    python scripts/make_fashion_mnist_mini.py [--root DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from qnnlab.data.idx import write_idx
from qnnlab.data.vision import fashion_mnist

OUT = Path(__file__).resolve().parents[1] / "src" / "qnnlab" / "data" / "embedded" / "fashion-mnist-mini"


def stratified(labels: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    picked = [order[labels[order] == c][:per_class] for c in range(int(labels.max()) + 1)]
    return torch.sort(torch.cat(picked)).values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", help="folder with the four Fashion-MNIST .gz files")
    parser.add_argument("--train-per-class", type=int, default=1000)
    parser.add_argument("--test-per-class", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data = fashion_mnist(args.root)
    OUT.mkdir(parents=True, exist_ok=True)
    for split, x, y, per_class in (
        ("train", data.train_x, data.train_y, args.train_per_class),
        ("t10k", data.test_x, data.test_y, args.test_per_class),
    ):
        keep = stratified(y, per_class, args.seed)
        write_idx(OUT / f"{split}-images-idx3-ubyte.gz", x[keep, 0].numpy())
        write_idx(OUT / f"{split}-labels-idx1-ubyte.gz", y[keep].numpy())
        print(f"{split}: {len(keep)} images")


if __name__ == "__main__":
    main()
