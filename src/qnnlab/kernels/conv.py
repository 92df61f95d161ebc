"""Binary convolution on channel-packed images.

Activations are packed per pixel along the channels (NHWC, ceil(C / 64) words per pixel) and
filters in the same (dy, dx, channel) order; each output is the sum over its taps of
C - 2 popcount(x XOR w), computed directly on the packed image (no im2col patches).

Zero padding: a padded 0 is not a +-1 value and adds nothing, so the kernel skips the taps that
fall on the padding: the result equals torch's conv2d of the +-1 input with zero padding, as
QuantConv2d trains it.
"""

from __future__ import annotations

import numpy as np
import torch

from qnnlab.kernels.packing import pack, words


def pack_nhwc(x: torch.Tensor) -> torch.Tensor:
    """+-1 (B, C, H, W) -> int64 (B, H, W, ceil(C / 64)), channel k of a pixel at bit k % 64 of word k // 64."""
    if x.dim() != 4:
        raise ValueError(f"expected a (B, C, H, W) tensor, got {tuple(x.shape)}")
    return pack(x.permute(0, 2, 3, 1))


def pack_filters(w: torch.Tensor) -> torch.Tensor:
    """+-1 (O, C, kh, kw) -> int64 (O, kh * kw * ceil(C / 64)) in (dy, dx, channel word) order."""
    if w.dim() != 4:
        raise ValueError(f"expected (O, C, kh, kw) filters, got {tuple(w.shape)}")
    return pack(w.permute(0, 2, 3, 1)).reshape(w.shape[0], -1)


def _check_operands(x_nhwc: torch.Tensor, w_packed: torch.Tensor, channels: int, kernel: tuple[int, int]) -> None:
    if x_nhwc.dtype != torch.int64 or x_nhwc.dim() != 4 or x_nhwc.shape[-1] != words(channels):
        raise ValueError(
            f"input must be channel-packed int64 (B, H, W, {words(channels)}), got {x_nhwc.dtype} {tuple(x_nhwc.shape)}"
        )
    kh, kw = kernel
    wc = words(channels)
    if w_packed.dtype != torch.int64 or w_packed.dim() != 2 or w_packed.shape[1] != kh * kw * wc:
        raise ValueError(
            f"filters must be packed (O, {kh * kw * wc}) for {channels} channels and a "
            f"{kh}x{kw} kernel, got {tuple(w_packed.shape)}"
        )


def direct_filters(w_packed: torch.Tensor, kernel: tuple[int, int]) -> torch.Tensor:
    """Packed filters (O, kh * kw * Wc) laid out (kh, kw, Wc, O) for the direct convolution."""
    kh, kw = kernel
    return w_packed.reshape(w_packed.shape[0], kh, kw, -1).permute(1, 2, 3, 0).contiguous()


def binary_conv2d_direct(
    x_nhwc: torch.Tensor,
    w_packed: torch.Tensor,
    channels: int,
    kernel: tuple[int, int],
    stride: int = 1,
    padding: int = 0,
    transposed: torch.Tensor | None = None,
) -> torch.Tensor:
    """Channel-packed input (B, H, W, Wc) convolved with packed filters (O, kh * kw * Wc) -> int32
    (B, H', W', O), equal to conv2d of the +-1 values with zero padding, computed directly on the
    packed image (``_numba.binary_conv_direct``).
    ``transposed``: ``direct_filters(w_packed, kernel)``, made once by a caller that convolves often."""
    from qnnlab.kernels import _numba, _words_view, launch

    _check_operands(x_nhwc, w_packed, channels, kernel)
    kh, kw = kernel
    wc = x_nhwc.shape[-1]
    if stride < 1 or padding < 0:
        raise ValueError(f"stride={stride} must be >= 1 and padding={padding} >= 0")
    batch, height, width, _ = x_nhwc.shape
    out_h, out_w = (height + 2 * padding - kh) // stride + 1, (width + 2 * padding - kw) // stride + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(f"a {height}x{width} input is smaller than the {kh}x{kw} kernel")
    if transposed is None:
        transposed = direct_filters(w_packed, kernel)
    elif tuple(transposed.shape) != (kh, kw, wc, w_packed.shape[0]) or not transposed.is_contiguous():
        raise ValueError(f"transposed filters must be direct_filters(w_packed, kernel), got {tuple(transposed.shape)}")
    out = np.empty((batch, out_h, out_w, w_packed.shape[0]), dtype=np.int32)
    launch(_numba.binary_conv_direct, _words_view(x_nhwc), _words_view(transposed), channels, stride, padding, out)
    return torch.from_numpy(out)


def binary_conv2d(
    x_nhwc: torch.Tensor,
    w_packed: torch.Tensor,
    channels: int,
    kernel: tuple[int, int],
    stride: int = 1,
    padding: int = 0,
) -> torch.Tensor:
    """``binary_conv2d_direct`` with the output in PyTorch's (B, O, H', W') layout."""
    return binary_conv2d_direct(x_nhwc, w_packed, channels, kernel, stride, padding).permute(0, 3, 1, 2).contiguous()
