"""The packed format shared by every kernel and by exported models.

A vector of K values in {-1, +1} becomes ceil(K / 64) 64-bit words (stored as int64): element k
is bit k % 64 (least significant first) of word k // 64, set for +1 and clear for -1; the unused
tail bits of the last word are 0. Both operands of a product are padded alike, so their tail
bits never differ and drop out of popcount(a XOR b).
"""

from __future__ import annotations

import torch

WORD = 64
_SHIFTS = torch.arange(WORD, dtype=torch.int64)


def words(k: int) -> int:
    return (k + WORD - 1) // WORD


def pack(x: torch.Tensor) -> torch.Tensor:
    """(..., K) tensor of +-1 values (any real dtype, or bool with True = +1; x >= 0 counts as +1)
    -> (..., ceil(K / 64)) int64 words."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"pack expects a torch.Tensor, got {type(x).__name__}")
    if x.is_complex() or x.dim() == 0:
        raise ValueError(f"pack expects a real tensor of shape (..., K), got {x.dtype} {tuple(x.shape)}")
    k = x.shape[-1]
    if k == 0:
        raise ValueError("pack: the last dimension K must be at least 1")
    if x.is_floating_point() and bool(x.isnan().any()):
        raise ValueError("pack: the values hold NaN, which is neither +1 nor -1")
    bits = x if x.dtype == torch.bool else x >= 0
    pad = words(k) * WORD - k
    if pad:
        bits = torch.nn.functional.pad(bits, (0, pad), value=False)
    bits = bits.reshape(*bits.shape[:-1], words(k), WORD).to(torch.int64)
    return (bits << _SHIFTS.to(bits.device)).sum(-1)  # distinct bits: the sum is the bitwise OR


def unpack(packed: torch.Tensor, k: int) -> torch.Tensor:
    """Inverse of ``pack``: (..., W) int64 words -> (..., k) float32 +-1 values."""
    check_packed(packed, k, "packed")
    bits = (packed.unsqueeze(-1) >> _SHIFTS.to(packed.device)) & 1
    return bits.reshape(*packed.shape[:-1], packed.shape[-1] * WORD)[..., :k].to(torch.float32) * 2 - 1


def check_packed(packed: torch.Tensor, k: int, name: str) -> None:
    if not isinstance(packed, torch.Tensor) or packed.dtype != torch.int64:
        got = packed.dtype if isinstance(packed, torch.Tensor) else type(packed).__name__
        raise ValueError(f"{name} must be an int64 tensor from qnnlab.kernels.pack, got {got}")
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if packed.dim() < 1 or packed.shape[-1] != words(k):
        raise ValueError(
            f"{name} has {packed.shape[-1] if packed.dim() else 0} words per row but k={k} needs "
            f"{words(k)} (ceil(k / 64)); was it packed from K={k} values?"
        )
