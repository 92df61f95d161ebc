"""DropConnect's per-sample weight masks without storing them (``qnnlab.kernels._masks``): each
weight of each sample is kept with probability ``keep`` (quantized to 1/65536, drawn with as many
random bits as that fraction needs) and scaled by the inverse of that probability, so the expected
masked product is the unmasked one. The forward product and both gradients draw the same masks
from ``seed``."""

from __future__ import annotations

import numpy as np
import torch

RESOLUTION = 1 << 16


def _threshold(keep: float) -> tuple[int, np.uint64, float]:
    """(planes, threshold, scale): a weight is kept when its ``planes``-bit draw is below
    ``threshold``, the fraction keep rounded to 1/65536 and reduced (1/2: one bit, threshold 1)."""
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep={keep} must be in (0, 1]")
    threshold = min(RESOLUTION, max(1, round(keep * RESOLUTION)))
    twos = (threshold & -threshold).bit_length() - 1  # the factors of 2 that threshold and 2^16 share
    return 16 - twos, np.uint64(threshold >> twos), RESOLUTION / threshold


def _seed(seed: int) -> np.uint64:
    return np.uint64(seed & 0xFFFFFFFFFFFFFFFF)


def _float2d(t: torch.Tensor, name: str) -> np.ndarray:
    if t.dim() != 2 or t.dtype != torch.float32 or t.device.type != "cpu":
        raise ValueError(f"{name} must be a 2-D float32 CPU tensor, got {t.dtype} {tuple(t.shape)} on {t.device}")
    return t.detach().contiguous().numpy()


def masked_linear(x: torch.Tensor, w: torch.Tensor, seed: int, keep: float) -> torch.Tensor:
    """(B, K) x (N, K) -> (B, N): y[b] = (M_b * W) x[b] / keep, M_b the mask of sample b."""
    from qnnlab.kernels import launch
    from qnnlab.kernels._masks import masked_forward

    xs, ws = _float2d(x, "x"), _float2d(w, "w")
    if xs.shape[1] != ws.shape[1]:
        raise ValueError(f"x has {xs.shape[1]} features, w expects {ws.shape[1]}")
    planes, threshold, scale = _threshold(keep)
    out = np.empty((xs.shape[0], ws.shape[0]), dtype=np.float32)
    launch(masked_forward, xs, ws, _seed(seed), planes, threshold, np.float32(scale), out)
    return torch.from_numpy(out)


def masked_linear_grads(
    grad: torch.Tensor, x: torch.Tensor, w: torch.Tensor, seed: int, keep: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(dL/dx, dL/dW) of ``masked_linear`` for dL/dy = ``grad``, under the same masks."""
    from qnnlab.kernels import launch
    from qnnlab.kernels._masks import masked_input_grad, masked_weight_grad

    gs, xs, ws = _float2d(grad, "grad"), _float2d(x, "x"), _float2d(w, "w")
    planes, threshold, scale = _threshold(keep)
    dx = np.empty_like(xs)
    dw = np.empty_like(ws)
    launch(masked_input_grad, gs, ws, _seed(seed), planes, threshold, np.float32(scale), dx)
    launch(masked_weight_grad, gs, xs, _seed(seed), planes, threshold, np.float32(scale), dw)
    return torch.from_numpy(dx), torch.from_numpy(dw)


def masks(batch: int, n_out: int, n_in: int, seed: int, keep: float) -> torch.Tensor:
    """The bool masks (batch, n_out, n_in) that ``masked_linear`` draws for ``seed``: a reference
    for tests (it stores what the kernels never do)."""
    from qnnlab.kernels import launch
    from qnnlab.kernels._masks import mask_bits

    planes, threshold, _ = _threshold(keep)
    out = np.empty((batch, n_out, n_in), dtype=np.bool_)
    launch(mask_bits, _seed(seed), planes, threshold, out)
    return torch.from_numpy(out)
