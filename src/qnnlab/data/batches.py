"""Deterministic batch streams: the order of epoch e depends only on (seed, e), so a resumed run
sees the same batches as an uninterrupted one; with several processes each takes its share."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from qnnlab.data import ImageData


def epoch_generator(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    """A generator for one (seed, epoch); ``stream`` separates independent draws (order, flips)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch * 1009 + stream)


def augmentation(spec: str) -> tuple[bool, int]:
    """An ``augment`` spec -> (flip, largest shift in pixels): "none", or "+"-joined parts "flip"
    and "shift" (2 pixels) or "shift:N", e.g. "flip+shift:1"."""
    flip, shift = False, 0
    for part in [] if spec == "none" else spec.split("+"):
        name, _, size = part.partition(":")
        if name == "flip" and not size and not flip:
            flip = True
        elif name == "shift" and not shift and (not size or size.isdigit() and 0 < int(size) <= 8):
            shift = int(size or 2)
        else:
            raise ValueError(
                f"augment={spec!r}: give none, or flip and shift[:N] (N from 1 to 8 pixels, 2 without N) joined "
                "by +, e.g. flip+shift:1"
            )
    return flip, shift


def image_batches(
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    seed: int,
    epoch: int,
    augment: str = "none",
    rank: int = 0,
    world: int = 1,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled batches of pixels mapped to [-1, 1]; the last partial batch is dropped in training.

    ``augment`` (``augmentation``): flip mirrors each image left-right with probability 1/2; shift:N
    moves each image by -N..N pixels in each direction, filling with the background (pixel 0), as
    the pad-and-crop of CIFAR training does.
    """
    flip, reach = augmentation(augment)
    order = torch.randperm(len(labels), generator=epoch_generator(seed, epoch))
    flips = torch.rand(len(labels), generator=epoch_generator(seed, epoch, stream=1)) < 0.5
    moves = torch.randint(-reach, reach + 1, (len(labels), 2), generator=epoch_generator(seed, epoch, 2))
    for start in range(0, len(order) - batch_size + 1, batch_size):
        index = order[start : start + batch_size][rank::world]
        x = to_unit_range(images[index])
        if flip:
            mirror = flips[index]
            x[mirror] = x[mirror].flip(-1)
        if reach:
            x = shifted(x, moves[index], fill=-1.0)
        yield x, labels[index]


def shifted(x: torch.Tensor, moves: torch.Tensor, fill: float) -> torch.Tensor:
    """Images (B, C, H, W) each moved by moves[b] = (down, right) pixels, uncovered pixels ``fill``."""
    batch, _, height, width = x.shape
    reach = int(moves.abs().max()) if len(moves) else 0
    padded = torch.nn.functional.pad(x, (reach,) * 4, value=fill)
    rows = (reach - moves[:, 0])[:, None] + torch.arange(height)
    cols = (reach - moves[:, 1])[:, None] + torch.arange(width)
    b = torch.arange(batch)[:, None, None, None]
    c = torch.arange(x.shape[1])[None, :, None, None]
    return padded[b, c, rows[:, None, :, None], cols[:, None, None, :]]


def to_unit_range(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels p -> p / 127.5 - 1 in [-1, 1]; 8-bit input quantizers on [-1, 1] keep them exact."""
    return pixels.float() / 127.5 - 1.0


def model_layout(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """Images (B, C, H, W) stored channels-last when asked (the ``channels_last`` config field);
    other tensors unchanged."""
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


def eval_batches(data: ImageData, batch_size: int = 1000) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for start in range(0, len(data.test_y), batch_size):
        yield to_unit_range(data.test_x[start : start + batch_size]), data.test_y[start : start + batch_size]


def lm_batches(
    tokens: torch.Tensor, batch_size: int, seq_len: int, rank: int = 0, world: int = 1
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Truncated-BPTT windows: the stream is cut into ``batch_size`` parallel rows read left to right,
    so the hidden state carries from one window to the next. Yields (inputs, next tokens), (B, T)."""
    rows = len(tokens) // batch_size
    if rows < 2:
        raise ValueError(f"{len(tokens)} tokens are too few for {batch_size} rows")
    grid = tokens[: rows * batch_size].reshape(batch_size, rows)[rank::world]
    for start in range(0, rows - 1, seq_len):
        end = min(start + seq_len, rows - 1)
        yield grid[:, start:end], grid[:, start + 1 : end + 1]
