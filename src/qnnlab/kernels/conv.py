"""Binary convolution on channel-packed images.

Activations are packed per pixel along the channels (NHWC, ceil(C / 64) words per pixel), so an
im2col patch is kh * kw pixels' words, and a convolution is one packed product of patches
against filters packed in the same (dy, dx, channel) order.

Zero padding: a padded 0 is not a +-1 value. The kernel pads with +1 (every channel bit set),
which adds sum over padded taps of w to border outputs, and subtracts exactly that: a correction
per (output channel, output position), computed once per shape by convolving the padding mask
with the weights. The result equals torch's conv2d of the +-1 input with zero padding, as
QuantConv2d trains it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

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


def padding_correction(w: torch.Tensor, height: int, width: int, stride: int, padding: int) -> torch.Tensor:
    """int32 (O, H', W'): sum of w over the taps of each output that fall on padding."""
    mask = F.pad(torch.zeros(1, w.shape[1], height, width, dtype=torch.float64), (padding,) * 4, value=1.0)
    signs = torch.where(w >= 0, 1.0, -1.0).to(torch.float64)
    return F.conv2d(mask, signs, stride=stride)[0].round().to(torch.int32)


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


def binary_conv2d_nhwc(
    x_nhwc: torch.Tensor,
    w_packed: torch.Tensor,
    channels: int,
    kernel: tuple[int, int],
    stride: int = 1,
    padding: int = 0,
    correction: torch.Tensor | None = None,
) -> torch.Tensor:
    """Channel-packed input (B, H, W, Wc) convolved with packed filters (O, kh * kw * Wc) -> int32
    (B, H', W', O), equal to conv2d of the +-1 values with zero padding. ``correction``
    (``padding_correction``) is required when padding > 0."""
    from qnnlab.kernels import ROWS_KERNEL_BYTES, _kernels, _words_view

    _check_operands(x_nhwc, w_packed, channels, kernel)
    kh, kw = kernel
    wc = x_nhwc.shape[-1]
    if padding and correction is None:
        raise ValueError("padding > 0 needs the padding correction (padding_correction)")
    batch = x_nhwc.shape[0]
    if padding:
        full = pack(torch.ones(channels))  # every channel +1, tail bits clear
        padded = full.expand(batch, x_nhwc.shape[1] + 2 * padding, x_nhwc.shape[2] + 2 * padding, wc).clone()
        padded[:, padding : padding + x_nhwc.shape[1], padding : padding + x_nhwc.shape[2]] = x_nhwc
        x_nhwc = padded
    patches = x_nhwc.unfold(1, kh, stride).unfold(2, kw, stride)  # (B, H', W', Wc, kh, kw)
    out_h, out_w = patches.shape[1], patches.shape[2]
    rows = patches.permute(0, 1, 2, 4, 5, 3).reshape(batch * out_h * out_w, kh * kw * wc)
    result = np.empty((rows.shape[0], w_packed.shape[0]), dtype=np.int32)
    a, b = _words_view(rows), _words_view(w_packed)
    if b.nbytes > ROWS_KERNEL_BYTES:
        _kernels().xnor_gemm_tiled(a, b, kh * kw * channels, result)
    else:
        _kernels().xnor_gemm_rows(a, np.ascontiguousarray(b.T), kh * kw * channels, result)
    out = torch.from_numpy(result).reshape(batch, out_h, out_w, -1)
    if padding and tuple(correction.shape) != (w_packed.shape[0], out_h, out_w):
        raise ValueError(
            f"the padding correction has shape {tuple(correction.shape)}, this output needs "
            f"{(w_packed.shape[0], out_h, out_w)}; make it with padding_correction for this input size"
        )
    if padding:
        out -= correction.permute(1, 2, 0)
    return out


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
    """``binary_conv2d_nhwc`` computed directly on the packed image (``_numba.binary_conv_direct``):
    no padded copy, no im2col patches and no padding correction. int32 (B, H', W', O).
    ``transposed``: ``direct_filters(w_packed, kernel)``, made once by a caller that convolves often."""
    from qnnlab.kernels import _kernels, _words_view

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
    _kernels().binary_conv_direct(_words_view(x_nhwc), _words_view(transposed), channels, stride, padding, out)
    return torch.from_numpy(out)


def binary_conv2d(
    x_nhwc: torch.Tensor,
    w_packed: torch.Tensor,
    channels: int,
    kernel: tuple[int, int],
    stride: int = 1,
    padding: int = 0,
    correction: torch.Tensor | None = None,
) -> torch.Tensor:
    """``binary_conv2d_nhwc`` with the output in PyTorch's (B, O, H', W') layout."""
    return (
        binary_conv2d_nhwc(x_nhwc, w_packed, channels, kernel, stride, padding, correction)
        .permute(0, 3, 1, 2)
        .contiguous()
    )
