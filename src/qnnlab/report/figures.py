"""The report's figures, each a function from records (or, for the explanatory ones, from qnnlab's
own quantizers and cost model) to a matplotlib figure. One style throughout: labelled axes with
units, and markers and hatches besides colour, so a figure printed in grey still reads."""

from __future__ import annotations

from typing import Any

import torch

from qnnlab import quant
from qnnlab.analysis import EnergyTable, profile

GREYS = ("#111111", "#555555", "#888888", "#bbbbbb")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
HATCHES = ("", "//", "..", "xx", "\\\\", "++", "oo", "--")


def pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ValueError("qnnlab report needs matplotlib: pip install 'qnnlab[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 10, "axes.spines.top": False, "axes.spines.right": False, "figure.dpi": 110})
    return plt


def energy_per_operation(energy: EnergyTable | None = None) -> Any:
    """Horowitz's 45 nm energies and what one multiply-accumulate of each kind our runs use costs."""
    energy = energy or EnergyTable()
    rows = [
        ("fp32 MAC (float nets)", energy.mac("fp32")),
        ("fp16 MAC", energy.mac("fp16")),
        ("int8 MAC (8-bit first layer)", energy.mac("int8")),
        ("int2 MAC (QNN 2-bit)", energy.mac("int2")),
        ("fp32 add (+-1 weight x real input: BinaryConnect)", energy.mac("add_fp32")),
        ("binary MAC: XNOR + popcount (BNN, XNOR-Net)", energy.mac("binary")),
        ("32-bit word from SRAM (8 KB)", 32 * energy.memory_bit("sram")),
        ("32-bit word from DRAM", 32 * energy.memory_bit("dram")),
    ]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.8))
    labels, values = zip(*rows)
    bars = ax.barh(range(len(rows)), values, color=GREYS[1], edgecolor="black")
    for bar, value in zip(bars, values):
        ax.text(value * 1.15, bar.get_y() + bar.get_height() / 2, f"{value:.3g} pJ", va="center", fontsize=8)
    ax.set_yticks(range(len(rows)), labels)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("energy per operation (pJ, 45 nm, log scale)")
    ax.set_title("Where the energy goes: arithmetic is cheap, memory is not (Horowitz, ISSCC 2014)")
    fig.tight_layout()
    return fig


def estimator_curves() -> Any:
    """sign's forward map, the backward pass of each straight-through estimator, and the
    probability of +1 of stochastic binarization."""
    x = torch.linspace(-2.5, 2.5, 501)
    plt = pyplot()
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(11, 3.4))
    left.plot(x, torch.where(x >= 0, 1.0, -1.0), color="black", label="sign(x): forward")
    left.plot(x, x.clamp(-1, 1), "--", color=GREYS[1], label="hardtanh: what clipped STE differentiates")
    approx = torch.where(x.abs() <= 1, 2 * x - x * x.abs(), torch.sign(x))
    left.plot(x, approx, ":", color=GREYS[2], label="ApproxSign F(x)")
    left.set(title="forward", xlabel="pre-activation x", ylabel="output")
    left.legend(fontsize=7, loc="lower right")
    q = quant.get("sign")
    curves = [
        ("identity STE", "ste"),
        ("clipped STE", "clipped"),
        ("hard sigmoid, slope 2", "hardsigmoid:slope=2.0"),
        ("ApproxSign", "approxsign"),
        ("SwishSign (beta 5)", "swishsign"),
    ]
    for i, (label, spec) in enumerate(curves):
        estimator = quant.get(f"sign@{spec}").estimator
        derivative = estimator.derivative(x, q)
        y = torch.ones_like(x) if derivative is None else derivative.to(x.dtype)
        middle.plot(x, y, linestyle=("-", "--", "-.", ":", (0, (5, 1)))[i], color=GREYS[i % 3], label=label)
    middle.set(title="backward: the gradient each estimator passes", xlabel="pre-activation x", ylabel="dq/dx used")
    middle.legend(fontsize=7)
    for i, law in enumerate(("hard", "sigmoid")):
        prob = quant.get(f"stochastic_sign:law={law}").prob(x)
        right.plot(x, prob, ("-", "--")[i], color=GREYS[i], label=f"{law}: P(+1)")
    right.set(title="stochastic binarization", xlabel="latent value x", ylabel="probability of +1")
    right.legend(fontsize=7)
    fig.tight_layout()
    return fig


def difference_bars(table: list[dict[str, Any]], reference: str, title: str) -> Any:
    """Each configuration's accuracy difference from the reference, sorted, with the seed spread;
    hatched where the difference is within two spreads of zero."""
    rows = sorted((r for r in table if r["configuration"] != reference), key=lambda r: r["diff"])
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(rows) + 1.3))
    for i, row in enumerate(rows):
        spread = row["diff_spread"] if row["diff_spread"] == row["diff_spread"] else 0.0
        unclear = abs(row["diff"]) <= 2 * spread
        ax.barh(
            i,
            row["diff"],
            xerr=spread,
            color=GREYS[2 if unclear else 1],
            edgecolor="black",
            hatch="//" if unclear else "",
            capsize=2,
        )
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(rows)), [r["configuration"] for r in rows])
    ref = next(r for r in table if r["configuration"] == reference)
    ax.set_xlabel(f"test accuracy difference from '{reference}' ({ref['mean']:.2f}%), points; bars: +- s.d. over seeds")
    ax.set_xscale("symlog", linthresh=2)
    ax.set_title(title + " (hatched: within two seed spreads of zero)")
    fig.tight_layout()
    return fig


def estimator_bias_variance(rows: list[dict[str, Any]]) -> Any:
    """Relative bias against relative variance of each estimator (mean over networks), per law."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["law"], row["estimator"]), []).append(row)
    laws = sorted({law for law, _ in groups})
    plt = pyplot()
    fig, axes = plt.subplots(1, len(laws), figsize=(5.5 * len(laws), 4), sharey=True, squeeze=False)
    for ax, law in zip(axes[0], laws):
        names = sorted({name for (row_law, name) in groups if row_law == law})
        for i, name in enumerate(names):
            found = groups[law, name]
            bias = sum(r["relative_bias"] for r in found) / len(found)
            variance = sum(r["relative_variance"] for r in found) / len(found)
            ax.scatter(bias, variance, marker=MARKERS[i % len(MARKERS)], color=GREYS[i % 3], s=45, label=name)
        ax.set(
            xscale="log",
            yscale="log",
            title=f"P(+1) by the {law} law",
            xlabel="relative bias |E[g] - g*| / |g*|",
            ylabel="relative variance E|g - E g|^2 / |g*|^2",
        )
        ax.legend(fontsize=7)
    fig.suptitle(
        f"Gradient estimators against the exact gradient of a {rows[0]['hidden']}-unit stochastic binary network"
    )
    fig.tight_layout()
    return fig


def step_energy(
    recipes: tuple[str, ...] = ("float", "bnn", "dorefa"), widths: tuple[int, ...] = (256, 256, 256)
) -> Any:
    """Energy of one training step (batch 100) by phase, split into arithmetic by kind and memory
    traffic, for each recipe on the same MLP (``qnnlab analyze --train``)."""
    from qnnlab.data import ImageData
    from qnnlab.run import build_model, resolve

    data = ImageData.empty((1, 28, 28), 10)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    parts: dict[str, list[float]] = {}
    for i, recipe in enumerate(recipes):
        config = resolve(recipe, {"model": "mlp", "model_options": {"widths": list(widths)}})
        prof = profile(
            build_model(config, data),
            torch.randn(100, 1, 28, 28),
            train=True,
            optimizer=config.optimizer,
            loss=config.loss,
            clip_latent=bool(config.clip_latent),
        )
        for layer in prof.layers:
            for (_, op, kind), n in layer.counts.items():
                label = f"MAC {kind}" if op == "mac" else "other arithmetic"
                parts.setdefault(label, [0.0] * len(recipes))[i] += n * prof._op_energy(op, kind, layer) / 1e6
        parts.setdefault("memory traffic", [0.0] * len(recipes))[i] += prof.memory_energy_pj() / 1e6
    bottom = [0.0] * len(recipes)
    for j, (label, values) in enumerate(sorted(parts.items(), key=lambda kv: kv[0] == "memory traffic")):
        memory = label == "memory traffic"
        color, hatch = ("#e8e8e8", "//") if memory else (GREYS[j % 3], HATCHES[j % len(HATCHES)])
        ax.bar(recipes, values, bottom=bottom, label=label, color=color, hatch=hatch, edgecolor="black")
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_ylabel("energy per training step (uJ, batch 100, 45 nm)")
    ax.set_title(f"One training step of the 784-{'-'.join(map(str, widths))}-10 MLP")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def pareto(points: list[dict[str, Any]], cost: str, label: str) -> Any:
    """Accuracy against a cost, one point per configuration (mean over seeds), the front drawn."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    studies = sorted({p["study"] for p in points})
    for i, study in enumerate(studies):
        mine = [p for p in points if p["study"] == study]
        ax.scatter(
            [p[cost] for p in mine],
            [p["accuracy"] for p in mine],
            marker=MARKERS[i % len(MARKERS)],
            color=GREYS[i % 3],
            label=study,
            s=30,
        )
    front, best = [], -1.0
    for p in sorted(points, key=lambda p: p[cost]):
        if p["accuracy"] > best:
            front.append(p)
            best = p["accuracy"]
    ax.plot([p[cost] for p in front], [p["accuracy"] for p in front], "-", color="black", linewidth=1, label="front")
    ax.set(xscale="log", xlabel=label, ylabel="test accuracy (%)", title=f"Accuracy against {label.split(' (')[0]}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
