"""Training batches: deterministic order and augmentations."""

import pytest
import torch

from qnnlab.data.batches import augmentation, image_batches, shifted


def _images(n=40, size=8):
    return torch.randint(1, 256, (n, 1, size, size), dtype=torch.uint8), torch.arange(n) % 10


def test_shifted_moves_each_image_and_fills_the_uncovered_border():
    x = torch.arange(2 * 1 * 4 * 5, dtype=torch.float32).reshape(2, 1, 4, 5)
    out = shifted(x, torch.tensor([[1, -2], [0, 0]]), fill=-1.0)
    assert torch.equal(out[1], x[1])
    assert torch.equal(out[0, 0, 1:, :3], x[0, 0, :3, 2:])  # down 1, left 2
    assert (out[0, 0, 0] == -1).all() and (out[0, 0, :, 3:] == -1).all()


@pytest.mark.parametrize("augment", ["none", "flip", "shift", "flip+shift:1"])
def test_each_epoch_is_the_same_for_the_same_seed_and_keeps_labels_with_images(augment):
    images, labels = _images()
    first = list(image_batches(images, labels, 8, seed=3, epoch=1, augment=augment))
    again = list(image_batches(images, labels, 8, seed=3, epoch=1, augment=augment))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    for x, _ in first:
        assert x.shape == (8, 1, 8, 8) and x.min() >= -1 and x.max() <= 1
    if augment == "none":
        x, y = first[0]
        order = torch.randperm(40, generator=torch.Generator().manual_seed(3 * 1_000_003 + 1009))[:8]
        assert torch.equal(y, labels[order]) and torch.equal(x, images[order].float() / 127.5 - 1)


@pytest.mark.parametrize("reach", [1, 2])
def test_shift_moves_by_at_most_its_reach_and_moves_most_images(reach):
    images, labels = _images(200, 12)
    moved = 0
    order = torch.randperm(200, generator=torch.Generator().manual_seed(0 * 1_000_003 + 0 * 1009))
    for i, (x, _) in enumerate(image_batches(images, labels, 20, seed=0, epoch=0, augment=f"shift:{reach}")):
        for j, image in enumerate(x):
            source = images[order[20 * i + j]].float() / 127.5 - 1
            matches = [
                (dy, dx)
                for dy in range(-reach, reach + 1)
                for dx in range(-reach, reach + 1)
                if torch.equal(image, shifted(source[None], torch.tensor([[dy, dx]]), -1.0)[0])
            ]
            assert len(matches) == 1
            moved += matches[0] != (0, 0)
    assert moved > 150  # all moves but (0, 0) move the image


def test_augment_specs_read_flip_and_shift_and_refuse_the_rest_by_name():
    assert augmentation("none") == (False, 0) and augmentation("flip+shift") == (True, 2)
    assert augmentation("shift:3+flip") == (True, 3) and augmentation("shift:1") == (False, 1)
    for wrong in ("crop", "flip+flip", "shift:0", "shift:x", "shift:9", "flip:1", "", "none+flip"):
        with pytest.raises(ValueError, match="give none, or flip and shift"):
            augmentation(wrong)
    images, labels = _images()
    with pytest.raises(ValueError, match="augment='crop'"):
        next(image_batches(images, labels, 8, seed=0, epoch=0, augment="crop"))
