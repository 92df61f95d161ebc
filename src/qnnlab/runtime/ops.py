"""The runtime's operations. Each op is a small dict in the model file plus named tensors; each
has a packed implementation and a plain PyTorch reference (``reference=True``) that tests use.

Ops:
- ``flatten``: (B, ...) -> (B, F).
- ``binary_linear``: packed input bits (B, W) x packed +-1 weights (N, W) -> int32 (B, N) + bias.
- ``real_linear``: real input (B, K) x packed +-1 weights: the first layer. When the input lies on
  the 8-bit pixel grid x = c / 127.5 - 1 (as the trainer feeds it), the product is computed exactly
  from the pixel codes' bit planes (QNN paper): x . w = (sum_i 2^i (c_i . w)) / 127.5 - sum(w);
  otherwise with the unpacked +-1 weights in float.
- ``threshold``: batch norm followed by sign, fused: bit = (y >= t) for channels with a positive
  batch-norm scale, (y <= t) for negative ones, constant where the scale is 0; output packed.
- ``affine``: the output batch norm, y * scale + shift, giving the logits.
- ``real_conv``: the first convolution, real input against +-1 filters (float, as PyTorch).
- ``binary_conv``: channel-packed bits (B, H, W, Wc) against packed filters, with the exact
  zero-padding correction (``qnnlab.kernels.conv``) -> (B, O, H', W'). The correction follows
  from the filters and the input size, so the file does not store it: it is made once per size.
- ``maxpool``: max pooling of the integer pre-activations (before the threshold, as trained).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from qnnlab import kernels


def _transposed(op: dict[str, Any], w: torch.Tensor) -> torch.Tensor:
    """The packed weights as (W, N), made once per op and kept with it."""
    if "_transposed" not in op:
        op["_transposed"] = w.T.contiguous()
    return op["_transposed"]


def _pixel_sums(
    op: dict[str, Any], codes: torch.Tensor, w: torch.Tensor, k: int, weight_sum: torch.Tensor
) -> torch.Tensor:
    """Exact sum_t c_t w_t for uint8 pixel codes and +-1 weights. An int8 GEMM does it fastest where
    the CPU has integer dot-product instructions: sum (c - 128) w + 128 sum(w), with (c - 128) and w
    in int8; where torch offers none, the bit-plane AND-popcount kernel (QNN paper) does."""
    if "_int8_weights" not in op:
        op["_int8_weights"] = kernels.unpack(w, k).to(torch.int8).T.contiguous()
    try:
        centred = (codes.to(torch.int16) - 128).to(torch.int8)
        return torch._int_mm(centred, op["_int8_weights"]).to(torch.int64) + 128 * weight_sum.to(torch.int64)
    except (AttributeError, RuntimeError):
        return kernels.pixel_matmul(codes, _transposed(op, w), k)


def _float_filters(op: dict[str, Any], tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    if "_filters" not in op:
        kh, kw = op["kernel"]
        k = op["channels"] * kh * kw
        op["_filters"] = kernels.unpack(tensors[op["weight"]], k).reshape(op["out_channels"], op["channels"], kh, kw)
    return op["_filters"]


def _binary_filters(op: dict[str, Any], tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """Unpack (dy, dx, channel)-ordered filters back to (O, C, kh, kw) +-1 floats."""
    kh, kw = op["kernel"]
    words = kernels.words(op["channels"])
    per_pixel = tensors[op["weight"]].reshape(op["out_channels"], kh, kw, words)
    return kernels.unpack(per_pixel, op["channels"]).permute(0, 3, 1, 2)


CACHED_SIZES = 8


def _padding_correction(op: dict[str, Any], tensors: dict[str, torch.Tensor], height: int, width: int) -> torch.Tensor:
    """The convolution's zero-padding correction for (height, width) inputs, made once per size
    (at most ``CACHED_SIZES`` sizes are kept, the oldest made dropped first)."""
    corrections = op.setdefault("_corrections", {})
    if (height, width) not in corrections:
        if len(corrections) >= CACHED_SIZES:
            del corrections[next(iter(corrections))]
        corrections[height, width] = kernels.padding_correction(
            _binary_filters(op, tensors), height, width, op["stride"], op["padding"]
        )
    return corrections[height, width]


def _threshold(op: dict[str, Any], x: torch.Tensor, tensors: dict[str, torch.Tensor], reference: bool) -> torch.Tensor:
    """Rows (B, N) -> packed rows; nhwc: (B, C, H, W) -> channel-packed (B, H, W, Wc);
    flat: (B, C, H, W) -> packed rows of the flattened (C, H, W) features."""
    t, positive, constant = tensors[op["threshold"]], tensors[op["positive"]], tensors[op["constant"]]
    layout = op.get("layout", "rows")
    if reference and layout == "nhwc":
        batch, channels, height, width = x.shape
        rows = x.permute(0, 2, 3, 1).reshape(-1, channels)
    elif layout == "nhwc":  # the packed path's feature maps are NHWC already
        batch, height, width, channels = x.shape
        rows = x.reshape(-1, channels)
    elif layout == "flat" and not reference:  # the classifier reads features in (C, H, W) order
        rows = x.permute(0, 3, 1, 2).reshape(x.shape[0], -1)
    else:
        rows = x.reshape(x.shape[0], -1)
    if not reference:
        packed = kernels.threshold_pack(rows.contiguous(), t, positive, constant)
        return packed.reshape(batch, height, width, -1) if layout == "nhwc" else packed
    y = rows.to(torch.float64)
    bits = torch.where(positive, y >= t, y <= t)
    bits = torch.where(constant >= 0, constant > 0, bits)  # a zero batch-norm scale: a constant sign
    values = bits.to(torch.float32) * 2 - 1
    return values.reshape(batch, height, width, channels).permute(0, 3, 1, 2) if layout == "nhwc" else values


def run_op(
    op: dict[str, Any], x: torch.Tensor, tensors: dict[str, torch.Tensor], reference: bool = False
) -> torch.Tensor:
    kind = op["op"]
    if kind == "flatten":
        return x.reshape(x.shape[0], -1)
    if kind == "binary_linear":
        w, k = tensors[op["weight"]], op["k"]
        if reference:  # x holds +-1 floats from the reference threshold
            y = x @ kernels.unpack(w, k).T
        else:
            y = kernels.binary_matmul(x, w, k).to(torch.float32)
        return y + tensors[op["bias"]] if op.get("bias") else y
    if kind == "real_linear":
        w, k = tensors[op["weight"]], op["k"]
        if x.shape[1] != k:
            raise ValueError(f"input has {x.shape[1]} features, the model expects {k}")
        codes = (x.to(torch.float64) + 1) * 127.5
        on_grid = (
            bool(((codes - codes.round()).abs() < 1e-3).all())
            and bool((codes >= -1e-3).all())
            and bool((codes <= 255 + 1e-3).all())
        )
        if reference or not on_grid:
            y = x.to(torch.float32) @ kernels.unpack(w, k).T
        else:
            sums = _pixel_sums(op, codes.round().to(torch.uint8), w, k, tensors[op["weight_sum"]])
            y = (sums.to(torch.float64) / 127.5 - tensors[op["weight_sum"]].to(torch.float64)).to(torch.float32)
        return y + tensors[op["bias"]] if op.get("bias") else y
    if kind == "threshold":
        return _threshold(op, x, tensors, reference)
    if kind == "real_conv":
        filters = _float_filters(op, tensors)
        y = F.conv2d(x.to(torch.float32), filters, stride=op["stride"], padding=op["padding"])
        if op.get("bias"):
            y = y + tensors[op["bias"]].reshape(-1, 1, 1)
        return y if reference else y.permute(0, 2, 3, 1)  # the packed path keeps feature maps in NHWC
    if kind == "binary_conv":
        if reference:  # x holds +-1 floats (B, C, H, W)
            y = F.conv2d(x, _binary_filters(op, tensors), stride=op["stride"], padding=op["padding"])
            return y + tensors[op["bias"]].reshape(-1, 1, 1) if op.get("bias") else y
        correction = _padding_correction(op, tensors, x.shape[1], x.shape[2]) if op["padding"] else None
        y = kernels.binary_conv2d_nhwc(
            x, tensors[op["weight"]], op["channels"], tuple(op["kernel"]), op["stride"], op["padding"], correction
        ).to(torch.float32)
        return y + tensors[op["bias"]] if op.get("bias") else y
    if kind == "maxpool":
        if reference:
            return F.max_pool2d(x, op["kernel"], op["stride"])
        pooled = F.max_pool2d(x.permute(0, 3, 1, 2), op["kernel"], op["stride"])  # a channels-last view
        return pooled.permute(0, 2, 3, 1)
    if kind == "affine":
        return x * tensors[op["scale"]] + tensors[op["shift"]]
    raise ValueError(f"unknown op {kind!r} in the model file; is it from a newer qnnlab?")
