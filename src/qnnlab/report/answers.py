"""Answers to the report's open questions that are not one study's table: each computed when the
report is built, from the records or from qnnlab's own kernels and quantizers, so every number in
it comes from a command (the report names it)."""

from __future__ import annotations

import statistics
from typing import Any

import torch
import torch.nn.functional as F

from qnnlab.report.records import Records


def _by_configuration(records: Records, study: str) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for record in records.results(study):
        found.setdefault(record["configuration"], []).append(record)
    return found


def generalisation(records: Records) -> str | None:
    """Train minus test accuracy at the last epoch, per recipe, from recipes-mlp's records."""
    runs = _by_configuration(records, "recipes-mlp")
    gaps = {
        name: statistics.mean(100 * (r["final"]["train_accuracy"] - r["final"]["test_accuracy"]) for r in found)
        for name, found in runs.items()
        if all("train_accuracy" in r["final"] for r in found)
    }
    if "float" not in gaps or len(gaps) < 2:
        return None
    ranked = sorted(gaps.items(), key=lambda item: item[1])
    listed = ", ".join(f"{name} {gap:+.2f}" for name, gap in ranked)
    smaller = [name for name, gap in gaps.items() if gap < gaps["float"]]
    return (
        f"Train minus test accuracy after the last epoch (points, mean over seeds; the training accuracy is "
        f"the epoch's running accuracy under the training-time noise): {listed}. Smaller than float's "
        f"({gaps['float']:+.2f}): {', '.join(smaller) or 'none'}. A smaller gap with a lower test accuracy is "
        f"regularisation that underfits, not better generalisation; evaluating each stochastic run with its "
        f"latent and its binary weights (`qnnlab eval RUN --mode latent|binary`) would settle the second half "
        f"of the question."
    )


def xnor_against_bnn(records: Records) -> str | None:
    """XNOR-Net's scaling factors against the plain BNN on one MLP, from recipes-mlp."""
    runs = _by_configuration(records, "recipes-mlp")
    if not {"xnor", "bnn"} <= set(runs):
        return None
    mean = {name: statistics.mean(100 * r["final"]["test_accuracy"] for r in runs[name]) for name in ("xnor", "bnn")}
    spread = {
        name: statistics.stdev([100 * r["final"]["test_accuracy"] for r in runs[name]]) if len(runs[name]) > 1 else 0.0
        for name in ("xnor", "bnn")
    }
    difference = mean["xnor"] - mean["bnn"]
    within = abs(difference) <= 2 * max(spread.values())
    return (
        f"On the same MLP, data, optimizer and epochs, XNOR-Net's scaled binary weights and inputs reach "
        f"{mean['xnor']:.2f} +- {spread['xnor']:.2f}% against the plain BNN's {mean['bnn']:.2f} +- "
        f"{spread['bnn']:.2f}%: {difference:+.2f} points, "
        + ("within two seed spreads. " if within else "more than two seed spreads. ")
        + "XNOR-Net's paper set its ImageNet result against BinaryConnect and BNN figures trained elsewhere, "
        "with other architectures and schedules; compared like for like here, the scaling factors do not buy "
        "what that comparison suggests, and they cost a real multiplication per output."
    )


def shift_batchnorm() -> str:
    """What AP2, the power-of-two rounding of shift-based batch norm, does with negative and zero values."""
    from qnnlab.quant.rounding import ap2

    values = torch.tensor([-3.0, -0.3, -1e-40, 0.0, 1e-40, 0.3, 0.7, 3.0])
    pairs = ", ".join(f"{v:g} -> {q:g}" for v, q in zip(values.tolist(), ap2(values).tolist()))
    return (
        f"AP2(x) = sign(x) 2^round(log2 |x|) keeps the sign and rounds the magnitude in the log domain: {pairs} "
        f"(qnnlab.quant.rounding.ap2). A negative argument keeps its sign, so centring (x - mean) and a negative "
        f"batch-norm scale gamma work as in float; zero and subnormal values give exactly 0, never a power of "
        f"two. The variance is non-negative, and 1/sqrt(var + eps) is rounded as AP2 of a positive number, "
        f"so a zero variance gives the power of two nearest 1/sqrt(eps) rather than a division by zero."
    )


def bit_serial_products() -> str:
    """An 8-bit by 4-bit product as shifted binary products, checked on random codes with qnnlab's kernel."""
    from qnnlab import kernels

    generator = torch.Generator().manual_seed(0)
    a = torch.randint(0, 256, (16, 64), generator=generator)
    b = torch.randint(0, 16, (8, 64), generator=generator)
    exact = torch.equal(kernels.bitserial_matmul(a, b, 8, 4), a @ b.T)
    return (
        "Write the 8-bit codes as bit planes, a = sum_i 2^i a_i, and the 4-bit ones as b = sum_j 2^j b_j: "
        "a . b = sum_ij 2^(i+j) (a_i . b_j), and each a_i . b_j is popcount(a_i AND b_j) over packed words. "
        "An 8 x 4-bit product is 32 binary AND-popcount products, shifted and added; signed or affine grids "
        "(v = s c + z) add the row sums of the codes. qnnlab.kernels.bitserial_matmul computes it that way and "
        f"equals the integer product on random 8-bit x 4-bit codes: {exact}. The cost grows with the product "
        "of the bit widths: 32 binary products here where an int8 unit does one 8-bit product."
    )


def max_pool_gradients() -> str:
    """Where max pooling sends the gradient when its inputs are binary, shown on a tensor."""
    x = torch.tensor([[[[1.0, -1.0], [1.0, 1.0]]]], requires_grad=True)
    F.max_pool2d(x, 2).sum().backward()
    routed = x.grad.flatten().tolist()
    return (
        f"Max pooling passes its gradient to one argmax; over +-1 values most windows hold several +1, and "
        f"the gradient goes to the first of them only (window [1, -1, 1, 1] -> gradient {routed}), while the "
        f"pooled value says nothing about the others. The BNN and XNOR-Net recipes therefore pool the real "
        f"convolution outputs, before batch norm and the sign (tests/models check the order): the gradient "
        f"then follows the largest pre-activation, as in a float network, and pooling never sees binary values."
    )


def where_benefits_come_from(records: Records) -> str | None:
    """Inference energy by the cost model, measured speed and file size, side by side."""
    from qnnlab.analysis import profile
    from qnnlab.data import ImageData
    from qnnlab.run import build_model, resolve

    energy = {}
    for recipe in ("float", "bnn"):
        config = resolve(recipe, {"model": "mlp", "model_options": {"widths": [256, 256, 256]}})
        prof = profile(build_model(config, ImageData.empty((1, 28, 28), 10)), torch.randn(1, 1, 28, 28), train=False)
        energy[recipe] = (prof.energy_pj(), prof.memory_energy_pj() / prof.energy_pj())
    text = (
        f"Inference of the 784-3x256-10 MLP by the 45 nm energy model (qnnlab analyze): the BNN needs "
        f"{energy['float'][0] / energy['bnn'][0]:.1f}x less energy than float, and memory traffic is "
        f"{energy['float'][1]:.0%} of float's energy and {energy['bnn'][1]:.0%} of the BNN's: most of the gain is "
        f"fewer bits moved, not cheaper arithmetic."
    )
    speed = records.speed
    if speed:
        text += (
            f" Measured (qnnlab demo, {speed['cpu']}): the packed BNN runs {speed['batch100']['speedup']:.1f}x "
            f"faster than torch float32 at batch 100 and its file is {speed['ratio']:.1f}x smaller"
            + (
                f"; against the strongest int8 deployment it is {speed['batch100']['speedup_vs_int8']:.2f}x"
                if "speedup_vs_int8" in speed["batch100"]
                else ""
            )
            + ". Training gains little: latent weights, batch norm and the optimizer stay in float (see the hidden "
            "costs above)."
        )
    return text


ANSWERS = (
    ("Where do the benefits really come from?", "qnnlab analyze; qnnlab demo", where_benefits_come_from),
    ("Does low-precision training generalise better?", "qnnlab sweep table results/cpu/recipes-mlp", generalisation),
    ("How trustworthy are XNOR-Net's comparisons?", "qnnlab sweep table results/cpu/recipes-mlp", xnor_against_bnn),
    (
        "How does the shift-based batch norm treat negative and zero arguments?",
        "qnnlab.quant.rounding.ap2",
        lambda _records: shift_batchnorm(),
    ),
    (
        "How does an 8-bit by 4-bit product reduce to shifted binary products?",
        "qnnlab.kernels.bitserial_matmul",
        lambda _records: bit_serial_products(),
    ),
    (
        "How do gradients pass through max pooling of binarized values?",
        "torch.nn.functional.max_pool2d",
        lambda _records: max_pool_gradients(),
    ),
)
