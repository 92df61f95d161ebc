"""Training-step cost of each recipe against the float recipe, on the same model and batch.

For each recipe: the median time of one optimizer step (forward, backward, update) measured in
alternation with the float model's step, the ratio quantized/float, and where the extra time
goes, from torch.profiler self-times grouped into categories (matrix products, quantizers,
normalisation, optimizer, other).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch

from qnnlab.data.batches import model_layout
from qnnlab.run import build_model, resolve
from qnnlab.timing import paired_ms
from qnnlab.train.memory import keep_freed_memory
from qnnlab.train.tasks import task_for
from qnnlab.train.updates import update_rule_for

# aten op name fragments by category (self CPU time is attributed to the innermost op)
CATEGORIES = (
    ("matmul", ("mm", "addmm", "matmul", "linear", "convolution", "conv2d", "bmm", "_slow_conv", "mkldnn")),
    ("batchnorm", ("batch_norm", "native_batch_norm")),
    ("optimizer", ("_foreach", "adam", "addcdiv", "addcmul", "lerp", "clamp_", "sqrt", "maximum")),
    (
        "quantizer",
        (
            "sign",
            "ge",
            "where",
            "round",
            "floor",
            "bernoulli",
            "rand",
            "clamp",
            "abs",
            "exp2",
            "log2",
            "tanh",
            "SurrogateGradient",
            "mul",
            "sub",
            "add",
            "div",
            "ones_like",
            "to",
            "copy_",
            "gt",
            "le",
            "bitwise",
            "logical",
            "lt",
            "eq",
            "ne",
        ),
    ),
)


def categorize(name: str) -> str:
    lowered = name.lower().removeprefix("aten::")
    for category, fragments in CATEGORIES:
        if any(fragment.lower() in lowered for fragment in fragments):
            return category
    return "other"


class TrainStep:
    """The step the trainer runs for ``recipe`` on ``model`` (its task's loss, the score-function
    term of stochastic quantizers, its update rule), on random data laid out as the trainer would."""

    def __init__(self, recipe: str, model: str, batch: int, data: Any, channels_last: bool = True) -> None:
        if batch < 1:
            raise ValueError(f"--batch {batch}: a training step needs at least one sample")
        config = resolve(recipe, {"model": model, "channels_last": channels_last, "batch_size": batch})
        torch.manual_seed(0)
        self.model = build_model(config, data)
        self.task = task_for(config, data)
        self.update = update_rule_for(self.model, config, steps_per_epoch=1_000_000)
        self.x = model_layout(torch.randn(batch, *data.shape), config.channels_last)
        self.y = torch.randint(0, data.classes, (batch,))

    def __call__(self) -> None:
        self.update.step(self.task, self.x, self.y, None)


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """The profiler's native layer logs to file descriptor 2; keep it out of the report."""
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def profile_categories(step: TrainStep, steps: int = 3) -> dict[str, float]:
    """Milliseconds per step by category, from profiler self CPU times."""
    from torch.profiler import ProfilerActivity, profile

    step()
    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    totals: dict[str, float] = {}
    for event in prof.key_averages():
        key = categorize(event.key)
        totals[key] = totals.get(key, 0.0) + event.self_cpu_time_total / 1e3 / steps
    return totals


def run(
    recipes: list[str], model: str = "mlp", batch: int = 100, repeats: int = 10, dataset: str = "fashion-mnist-mini"
) -> Iterator[dict[str, Any]]:
    from qnnlab import data as datasets

    keep_freed_memory()  # as the trainer does
    data = datasets.load(dataset)
    baseline = TrainStep("float", model, batch, data)
    for recipe in recipes:
        step = TrainStep(recipe, model, batch, data)
        q_ms, f_ms, speedup = paired_ms(step, baseline, repeats)
        base_profile = profile_categories(baseline)  # profiled next to the candidate, under the same load
        prof = profile_categories(step)
        extra = {k: round(prof.get(k, 0.0) - base_profile.get(k, 0.0), 3) for k in set(prof) | set(base_profile)}
        yield {
            "name": f"train-step/{recipe}",
            "shape": f"{model} batch {batch}",
            "qnnlab_ms": round(q_ms, 3),
            "baseline_ms": round(f_ms, 3),
            "speedup": round(speedup, 3),
            "ratio_to_float": round(1 / speedup, 3),
            "extra_ms_by_category": dict(sorted(extra.items(), key=lambda kv: -kv[1])),
        }


def run_layout(
    recipes: list[str], model: str = "cnn", batch: int = 100, repeats: int = 10, dataset: str = "fashion-mnist-mini"
) -> Iterator[dict[str, Any]]:
    """Each recipe's step with channels-last images against the same step with contiguous (NCHW) ones."""
    from qnnlab import data as datasets

    keep_freed_memory()
    data = datasets.load(dataset)
    for recipe in recipes:
        last = TrainStep(recipe, model, batch, data, channels_last=True)
        first = TrainStep(recipe, model, batch, data, channels_last=False)
        last_ms, first_ms, speedup = paired_ms(last, first, repeats)
        yield {
            "name": f"layout/{recipe}",
            "shape": f"{model} batch {batch}",
            "qnnlab_ms": round(last_ms, 3),
            "baseline_ms": round(first_ms, 3),
            "speedup": round(speedup, 3),
        }
