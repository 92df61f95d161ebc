"""Dynamic fixed point's exponent search in one pass over float32 bits (CPU).

The largest code 2^e (1 - 2^(1-B)), rounded to float32, has the bit pattern ((e + 126) << 23) + L
with L = 2^23 - 2^(25-B) (B <= 25; above, the code rounds to 2^e and L = 2^23). Bit patterns of
non-negative floats order as the floats, so the smallest e whose code covers |x| is
ceil((bits(|x|) - L) / 2^23) - 126: integer arithmetic on each element. A histogram of that
exponent per group then gives the overflow count of every candidate e at once, where comparing the
tensor against one threshold after another would allocate and read it each time.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit

MANTISSA_BITS = 23


@njit(nogil=True, cache=True)
def _exponent_histogram(bits, limit, lowest, highest, hist):  # pragma: no cover - compiled
    groups, n = bits.shape
    for g in range(groups):
        for i in range(n):
            b = bits[g, i] & 0x7FFFFFFF
            if b >= 0x7F800000:  # infinity and NaN count as zero, as in the torch search
                continue
            e = ((np.int64(b) - limit + (1 << 23) - 1) >> 23) - 126
            hist[g, min(max(e, lowest), highest) - lowest] += 1


def needed_exponents(groups: torch.Tensor, bits: int, rate: float, lowest: int, highest: int) -> torch.Tensor:
    """Per row of the float32 CPU matrix ``groups``, the smallest e in [lowest, highest] with
    count(|x| > 2^e (1 - 2^(1-B))) <= floor(rate * n); highest where none is."""
    rows = groups.detach().contiguous().numpy().view(np.uint32)
    limit = (
        (1 << MANTISSA_BITS) - (1 << (MANTISSA_BITS + 2 - bits)) if bits <= MANTISSA_BITS + 2 else 1 << MANTISSA_BITS
    )
    hist = np.zeros((rows.shape[0], highest + 2 - lowest), np.int64)
    _exponent_histogram(rows, limit, lowest, highest + 1, hist)
    above = np.cumsum(hist[:, ::-1], axis=1)[:, ::-1]  # above[:, i]: count(needed >= lowest + i)
    over = np.concatenate([above[:, 1:], np.zeros_like(above[:, :1])], axis=1)  # count(needed > lowest + i)
    fits = over[:, :-1] <= int(rate * rows.shape[1])
    first = np.where(fits.any(axis=1), fits.argmax(axis=1), highest - lowest)
    return torch.from_numpy((first + lowest).astype(np.int32))
