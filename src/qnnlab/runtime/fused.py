"""A binary MLP's whole op list as one kernel call (``qnnlab.kernels._fused.dense_chain``) for
small batches: flatten, the 8-bit first layer, then threshold and binary product per layer, and
the output batch norm. At batch 1 the op-by-op path spends most of its time dispatching a dozen
torch and numba calls, each reading its data cold after other work; this path makes one."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from qnnlab import kernels
from qnnlab.runtime import ops as runtime_ops

BATCH_LIMIT = 1  # from batch 2 the op-by-op path, with its int8 GEMM, is faster


class FusedDense:
    def __init__(self, first: runtime_ops.RealLinear, pairs: list[tuple[Any, Any]], affine: Any) -> None:
        """``pairs``: (threshold, binary_linear) per binary layer, the threshold acting on the
        previous layer's output; ``affine``: the output batch norm or None."""
        self.first = first
        n1 = first.weight.shape[0]
        self.w0 = kernels.unpack(first.weight, first.k).to(torch.int8).contiguous().numpy()  # +-1, a byte each
        self.offset0 = ((128 / 127.5 - 1) * first.weight_sum.to(torch.float64)).numpy()
        self.bias0 = _bias(first, n1)
        self.sign0, self.bound0 = kernels.threshold_tables(pairs[0][0].t, pairs[0][0].positive, pairs[0][0].constant)
        layers = [pair[1] for pair in pairs]
        thresholds = [pair[0] for pair in pairs[1:]]  # each binary layer's but the last
        sizes = [layer.weight.shape[0] for layer in layers]
        word_starts = np.cumsum([0] + [layer.weight.numel() for layer in layers])[:-1]
        value_starts = np.cumsum([0] + sizes)[:-1]
        self.shapes = np.array(
            [[n, layer.k, w, v] for n, layer, w, v in zip(sizes, layers, word_starts, value_starts)], dtype=np.int64
        )
        self.words = np.concatenate([layer.weight.reshape(-1).numpy().view(np.uint64) for layer in layers])
        self.biases = np.concatenate([_bias(layer, n) for layer, n in zip(layers, sizes)])
        tables = [kernels.threshold_tables(t.t, t.positive, t.constant) for t in thresholds]
        padding = np.zeros(sizes[-1])  # the last layer has no threshold: its slots are never read
        self.signs = np.concatenate([sign for sign, _ in tables] + [padding])
        self.bounds = np.concatenate([bound for _, bound in tables] + [padding])
        classes = layers[-1].weight.shape[0]
        self.scale = affine.scale.numpy() if affine else np.ones(classes, dtype=np.float32)
        self.shift = affine.shift.numpy() if affine else np.zeros(classes, dtype=np.float32)

    @classmethod
    def match(cls, steps: list[Any]) -> FusedDense | None:
        """The fused form of ``steps`` when they are flatten, real_linear, (rows threshold,
        binary_linear) one or more times, and an optional affine; else None."""
        kinds = [step.kind for step in steps]
        if kinds[:2] != ["flatten", "real_linear"]:
            return None
        rest, affine = (steps[2:-1], steps[-1]) if kinds[-1] == "affine" else (steps[2:], None)
        if not rest or len(rest) % 2:
            return None
        pairs = [(rest[i], rest[i + 1]) for i in range(0, len(rest), 2)]
        if any(t.kind != "threshold" or t.layout != "rows" or b.kind != "binary_linear" for t, b in pairs):
            return None
        return cls(steps[1], pairs, affine)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of x (B, ...) on the 8-bit pixel grid, B <= BATCH_LIMIT."""
        from qnnlab.kernels import _kernels
        from qnnlab.kernels._fused import dense_chain

        _kernels()
        flat = x.reshape(x.shape[0], -1).to(torch.float32).contiguous().numpy()
        out = np.empty((flat.shape[0], len(self.scale)), dtype=np.float32)
        dense_chain(
            flat,
            self.w0,
            self.offset0,
            self.bias0,
            self.sign0,
            self.bound0,
            self.shapes,
            self.words,
            self.biases,
            self.signs,
            self.bounds,
            self.scale,
            self.shift,
            out,
        )
        return torch.from_numpy(out)


def _bias(op: Any, n: int) -> np.ndarray:
    return op.bias.to(torch.float32).numpy() if op.bias is not None else np.zeros(n, dtype=np.float32)
