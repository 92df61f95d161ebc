"""Inference modes (BinaryConnect, section 2.6) and evaluation.

- ``binary``: the quantized weights, stochastic quantizers replaced by their deterministic
  counterpart (stochastic sign -> sign);
- ``latent``: the high-precision latent weights (weight quantizers off; inputs still quantized);
- ``ensemble:N``: the average of the softmax outputs of N networks whose weights are sampled
  anew by the stochastic quantizers.

When a mode changes the weights, batch-norm statistics are re-estimated for them first (see
``recalibrated_batchnorm``); the trained statistics are left as they were.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from qnnlab import quant
from qnnlab.analysis.inside import INSIDE, inside_of_run, write_inside
from qnnlab.data import ImageData, TextData
from qnnlab.data.batches import eval_batches, lm_batches, to_unit_range
from qnnlab.models.ebp import EBPNetwork
from qnnlab.nn import QuantizedModule
from qnnlab.run.model import load_trained


def parse_mode(mode: str) -> tuple[str, int]:
    name, _, count = mode.partition(":")
    if name in ("binary", "latent") and not count:
        return name, 1
    if name == "ensemble" and count.isdigit() and int(count) >= 1:
        return name, int(count)
    raise ValueError(f"evaluation mode {mode!r}; use binary, latent or ensemble:N (N >= 1)")


@contextlib.contextmanager
def weight_mode(model: nn.Module, mode: str) -> Iterator[bool]:
    """Temporarily swap every weight quantizer for the one ``mode`` evaluates with; yields whether
    any weight changed (then batch-norm statistics no longer match the weights)."""
    name, _ = parse_mode(mode)
    if isinstance(model, EBPNetwork):  # its posterior gives the three networks directly
        previous, model.mode = model.mode, name
        try:
            yield False
        finally:
            model.mode = previous
        return
    swapped: list[tuple[QuantizedModule, str, nn.Module]] = []
    for module in model.modules():
        if not isinstance(module, QuantizedModule):
            continue
        for param, original in module.weight_quantizers_by_name().items():
            if original.meta.kind == "float":
                continue  # already the latent weights in every mode
            replacement = {"latent": quant.get("float"), "binary": original.deterministic(), "ensemble": original}[name]
            if replacement is not original:
                module.set_weight_quantizer(param, replacement)
                swapped.append((module, param, original))
    try:
        yield bool(swapped)
    finally:
        for module, param, original in swapped:
            module.set_weight_quantizer(param, original)


BN_TYPES = (nn.modules.batchnorm._BatchNorm,)
RECALIBRATION_SAMPLES = 2000


@contextlib.contextmanager
def recalibrated_batchnorm(model: nn.Module, data: ImageData, device: str) -> Iterator[None]:
    """Re-estimate every batch norm's running mean and variance for the weights now in place, from
    RECALIBRATION_SAMPLES training images; the trained statistics are restored afterwards.

    Latent weights (or deterministic weights of a stochastically trained net) give other
    pre-activation statistics than the weights the running averages were collected with.
    """
    norms = [m for m in model.modules() if isinstance(m, BN_TYPES) and m.track_running_stats]
    saved = [(m.momentum, {k: v.clone() for k, v in m.state_dict().items()}) for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the recalibration batches
    was_training = model.training
    model.train()
    with torch.no_grad():
        for start in range(0, min(RECALIBRATION_SAMPLES, len(data.train_y)), 200):
            model(to_unit_range(data.train_x[start : start + 200]).to(device))
    model.train(was_training)
    try:
        yield
    finally:
        for m, (momentum, state) in zip(norms, saved):
            m.momentum = momentum
            m.load_state_dict(state)


@torch.no_grad()
def evaluate_images(model: nn.Module, data: ImageData, mode: str = "binary", device: str = "cpu") -> dict[str, float]:
    """Test accuracy and mean cross-entropy of the (averaged) predicted distribution."""
    _, passes = parse_mode(mode)
    was_training = model.training
    model.eval()
    correct, loss_sum, count = 0, 0.0, 0
    with contextlib.ExitStack() as stack:
        if stack.enter_context(weight_mode(model, mode)):
            stack.enter_context(recalibrated_batchnorm(model, data, device))
        model.eval()
        for x, y in eval_batches(data):
            x, y = x.to(device), y.to(device)
            probs = sum(F.softmax(model(x), dim=1) for _ in range(passes)) / passes
            correct += int((probs.argmax(1) == y).sum())
            loss_sum += float(F.nll_loss(probs.clamp_min(1e-12).log(), y, reduction="sum"))
            count += len(y)
    model.train(was_training)
    return {"test_accuracy": correct / count, "test_loss": loss_sum / count}


@torch.no_grad()
def evaluate_text(
    model: nn.Module,
    data: TextData,
    split: str = "valid",
    mode: str = "binary",
    device: str = "cpu",
    batch_size: int = 16,
    seq_len: int = 200,
) -> dict[str, float]:
    """Bits per token (per character for char corpora) and perplexity on ``split``."""
    was_training = model.training
    model.eval()
    total, count, state = 0.0, 0, None
    with weight_mode(model, mode):
        for x, y in lm_batches(getattr(data, split), batch_size, seq_len):
            logits, state = model(x.to(device), state)
            total += float(
                F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.to(device).reshape(-1), reduction="sum")
            )
            count += y.numel()
    model.train(was_training)
    nats = total / count
    key = "val" if split == "valid" else split
    return {
        f"{key}_bpc" if data.unit == "char" else f"{key}_bits_per_word": nats / math.log(2),
        f"{key}_ppl": math.exp(min(nats, 50.0)),
    }


def evaluate_checkpoint(
    path: str, mode: str = "binary", split: str = "test", data_root: str | None = None, seed: int = 0
) -> dict[str, float | str]:
    """Rebuild the model of a checkpoint (or run folder) from its saved config and evaluate it;
    ``seed`` fixes the networks that ``ensemble:N`` samples, so its result is reproducible."""
    parse_mode(mode)
    model, data, info = load_trained(path, data_root)
    with torch.random.fork_rng(devices=[]):  # the caller's random state is left as it was
        torch.manual_seed(seed)
        if isinstance(data, TextData):
            if split not in ("valid", "test"):
                raise ValueError(f"split={split!r}; text data sets have valid and test")
            result: dict = evaluate_text(model, data, split, mode)
        else:
            if split != "test":
                raise ValueError(f"split={split!r}; image data sets are evaluated on test")
            result = evaluate_images(model, data, mode)
    return {"checkpoint": info["checkpoint"], "mode": mode, "epoch": info["epoch"] + 1, **result}


def record_inside(path: str, data_root: str | None = None) -> str:
    """Write ``inside.json`` (``qnnlab.analysis.inside``) next to the checkpoint of ``path``, as
    sweeps do when a run ends; returns the file written."""
    model, data, info = load_trained(path, data_root)
    found = inside_of_run(model, data)
    if found is None:
        raise ValueError(f"{path}: inside.json records image classifiers; this run reads {type(data).__name__}")
    file = Path(info["checkpoint"]).parent / INSIDE
    write_inside(file, found)
    return str(file)
