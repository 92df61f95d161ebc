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

    plt.rcParams.update(
        {
            "font.size": 10,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "figure.dpi": 110,
            "figure.max_open_warning": 0,  # a report draws every figure before the page closes them
        }
    )
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


def training_step(recipes: tuple[str, ...] = ("float", "bnn", "dorefa"), widths: tuple[int, ...] = (256, 256)) -> Any:
    """One training step of each recipe's MLP, drawn from its actual config: every layer's input and
    weight quantizer and the kind of its products (shade), batch norm and activations, the
    estimator each quantizer is differentiated with, the loss, and the update (optimizer, latent
    weights, clipping)."""
    from torch import nn

    from qnnlab.analysis.kinds import mac_kind, operand_kind
    from qnnlab.data import ImageData
    from qnnlab.nn import QuantizedModule
    from qnnlab.run import build_model, resolve

    shade = {"fp32": "white", "binary": GREYS[1]}  # k-bit and +-1 x real products: light grey
    plt = pyplot()
    columns = []
    for recipe in recipes:
        config = resolve(recipe, {"model": "mlp", "model_options": {"widths": list(widths)}})
        model = build_model(config, ImageData.empty((1, 28, 28), 10))
        boxes = []
        for module in model.children():
            if isinstance(module, QuantizedModule):
                weight = module.weight_quantizers_by_name()["weight"]
                acts = module.activation_quantizers()
                kind = mac_kind(operand_kind(acts["input"].meta), operand_kind(weight.meta))
                back = f"dL/dx: {acts['input'].estimator.name}" if acts["input"].meta.kind != "float" else ""
                grad = "" if acts["grad"].meta.kind == "float" else f", errors {acts['grad']}"
                boxes.append(
                    (
                        f"{module.in_features}->{module.out_features}: x {acts['input']} . W {weight}\n"
                        f"products: {kind}{grad}",
                        kind,
                        back,
                    )
                )
            elif isinstance(module, nn.Linear):
                boxes.append((f"{module.in_features}->{module.out_features}: float . float", "fp32", ""))
            elif "Norm" in type(module).__name__:
                boxes.append(
                    ("shift-based batch norm" if "Shift" in type(module).__name__ else "batch norm", "fp32", "")
                )
            elif not isinstance(module, (nn.Identity, nn.Flatten)):
                boxes.append((type(module).__name__, "fp32", ""))
        clip = f", latent weights clipped to +-{config.clip_latent:g}" if config.clip_latent else ""
        boxes.append((f"loss: {config.loss.replace('_', ' ')}", "fp32", ""))
        boxes.append((f"update: {config.optimizer} (lr {config.lr:g}){clip}", "fp32", ""))
        columns.append((recipe, boxes))
    height = max(len(b) for _, b in columns)
    fig, ax = plt.subplots(figsize=(3.6 * len(columns), 0.55 * height + 1.2))
    for c, (recipe, boxes) in enumerate(columns):
        ax.text(c, height, recipe, ha="center", va="center", fontsize=11, weight="bold")
        for r, (label, kind, back) in enumerate(boxes):
            colour = shade.get(kind, "#d0d0d0")
            y = height - 1 - r
            ax.text(
                c,
                y,
                label,
                ha="center",
                va="center",
                fontsize=6.5,
                color="white" if colour == GREYS[1] else "black",
                bbox={"boxstyle": "round,pad=0.35", "fc": colour, "ec": "black"},
            )
            if back:
                ax.text(c + 0.47, y - 0.32, back, ha="right", va="center", fontsize=6, style="italic")
            if r:
                ax.annotate("", (c, y + 0.3), (c, y + 0.7), arrowprops={"arrowstyle": "->", "lw": 0.6})
    ax.set(xlim=(-0.55, len(columns) - 0.45), ylim=(-0.8, height + 0.5))
    ax.axis("off")
    ax.set_title(
        "One training step, top to bottom: forward through each layer (shade: the products' kind, dark "
        "binary, light k-bit or +-1 x real, white float), the estimator that carries dL/dx back, loss, update",
        fontsize=8,
    )
    fig.tight_layout()
    return fig


def first_layer_weights(runs: dict[str, dict[str, Any]]) -> Any | None:
    """The first layer's recorded units (``inside.json``) of trained networks as images, one row per
    run: BinaryConnect's figure on feature co-adaptation. None when no run's first layer reads an
    image (a square number of pixels, or convolution filters)."""
    shown = {name: _unit_images(record.get("first_layer")) for name, record in runs.items()}
    shown = {name: images for name, images in shown.items() if images}
    if not shown:
        return None
    plt = pyplot()
    units = max(len(images) for images in shown.values())
    fig, axes = plt.subplots(len(shown), units, figsize=(1.2 * units + 0.5, 1.45 * len(shown)), squeeze=False)
    for row, (name, images) in enumerate(shown.items()):
        for unit in range(units):
            axes[row][unit].axis("off")
            if unit < len(images):
                limit = float(images[unit].abs().max()) or 1.0
                axes[row][unit].imshow(images[unit].numpy(), cmap="gray", vmin=-limit, vmax=limit)
        axes[row][0].set_title(f"{name} ({runs[name]['study']})", fontsize=8, loc="left")
    fig.suptitle(f"First-layer weights of the first {units} units (grey: 0, white: +, black: -)")
    fig.tight_layout()
    return fig


def _unit_images(first: dict[str, Any] | None) -> list[torch.Tensor]:
    if not first:
        return []
    shape = first["shape"]
    side = round(shape[0] ** 0.5) if len(shape) == 1 else 0
    if len(shape) == 1 and side * side == shape[0]:
        return [torch.tensor(unit).reshape(side, side) for unit in first["units"]]
    if len(shape) == 3:  # convolution filters: the first input channel
        return [torch.tensor(unit).reshape(shape)[0] for unit in first["units"]]
    return []


def layer_histograms(runs: dict[str, dict[str, Any]], what: str, layers: int = 5) -> Any:
    """Histograms from ``inside.json``, one row per run and one panel per quantized layer (the first
    ``layers``): ``what`` is ``weights`` (latent weights) or ``activations`` (what each layer's input
    quantizer receives). Each panel names the quantizer and the share of values outside [-1, 1]."""
    plt = pyplot()
    columns = min(layers, max(len(r["layers"]) for r in runs.values()))
    fig, axes = plt.subplots(len(runs), columns, figsize=(2.5 * columns + 0.5, 1.9 * len(runs)), squeeze=False)
    for row, (name, record) in enumerate(runs.items()):
        for column in range(columns):
            ax = axes[row][column]
            entries = record["layers"][column][what] if column < len(record["layers"]) else {}
            histogram = next(iter(entries.values()), None)
            if not histogram or not histogram["count"]:
                ax.axis("off")
                continue
            counts = torch.tensor(histogram["counts"], dtype=torch.float64)
            edges = torch.linspace(histogram["low"], histogram["high"], len(counts) + 1)
            ax.stairs((counts / counts.sum()).numpy(), edges.numpy(), fill=True, color=GREYS[2], edgecolor=GREYS[0])
            for bound in (-1, 1):
                if histogram["low"] < bound < histogram["high"]:
                    ax.axvline(bound, color=GREYS[0], linestyle=":", linewidth=0.8)
            ax.set_title(
                f"layer {column + 1}: {histogram['quantizer']}, {100 * histogram['outside_unit']:.0f}% outside [-1, 1]",
                fontsize=7,
            )
            ax.tick_params(labelsize=6)
            if column == 0:
                ax.set_ylabel(f"{name}\nshare of values", fontsize=7)
            if row == len(runs) - 1:
                ax.set_xlabel("latent weight" if what == "weights" else "quantizer input", fontsize=7)
    subject = "Latent weights" if what == "weights" else "Activations reaching each layer's input quantizer"
    fig.suptitle(f"{subject} (dotted: -1 and +1)")
    fig.tight_layout()
    return fig


def heatmap(
    table: list[dict[str, Any]],
    rows: str,
    columns: str,
    panels: str | None,
    title: str,
    labels: tuple[str, str] | None = None,
    panel_label: str | None = None,
) -> Any:
    """Mean accuracy (%) of each configuration on a grid of two of its labels, one panel per value
    of a third; each cell shows the mean and the seed count. ``labels``: the axes' names (rows,
    columns); ``panel_label``: the panels' name (default: the labels' keys)."""
    plt = pyplot()
    panel_values = list(dict.fromkeys(r[panels] for r in table)) if panels else [None]
    row_values = list(dict.fromkeys(r[rows] for r in table))
    column_values = list(dict.fromkeys(r[columns] for r in table))
    size = (3.3 * len(panel_values) + 1.5, 0.5 * len(row_values) + 2)
    fig, axes = plt.subplots(1, len(panel_values), figsize=size, squeeze=False, layout="constrained")
    means = [r["mean"] for r in table]
    for ax, panel in zip(axes[0], panel_values):
        grid = [[float("nan")] * len(column_values) for _ in row_values]
        for r in table:
            if panels is None or r[panels] == panel:
                grid[row_values.index(r[rows])][column_values.index(r[columns])] = r["mean"]
        image = ax.imshow(grid, cmap="gray", vmin=min(means), vmax=max(means))
        for i, line in enumerate(grid):
            for j, value in enumerate(line):
                if value == value:
                    ax.text(
                        j,
                        i,
                        f"{value:.1f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="black" if value > (min(means) + max(means)) / 2 else "white",
                    )
        ax.set_xticks(range(len(column_values)), column_values, fontsize=7, rotation=30)
        ax.set_yticks(range(len(row_values)), row_values, fontsize=7)
        ax.set_title(f"{panel_label or panels} = {panel}" if panels else "", fontsize=8)
        ax.set_xlabel(labels[1] if labels else columns, fontsize=8)
        ax.set_ylabel(labels[0] if labels else rows, fontsize=8)
    fig.colorbar(image, ax=axes[0].tolist(), label="test accuracy (%), mean over seeds")
    fig.suptitle(title)
    return fig


def curves(table: list[dict[str, Any]], x: str, series: str, title: str, xlabel: str) -> Any:
    """Mean accuracy against one label, a line per value of another, bars: +- s.d. over seeds."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    xs = list(dict.fromkeys(r[x] for r in table))
    for i, name in enumerate(dict.fromkeys(r[series] for r in table)):
        mine = {r[x]: r for r in table if r[series] == name}
        points = [(xs.index(k), mine[k]) for k in xs if k in mine]
        ax.errorbar(
            [p for p, _ in points],
            [r["mean"] for _, r in points],
            yerr=[0 if r["std"] != r["std"] else r["std"] for _, r in points],
            marker=MARKERS[i],
            color=GREYS[i % 3],
            linestyle=("-", "--", ":")[i % 3],
            capsize=3,
            label=str(name),
        )
    ax.set_xticks(range(len(xs)), xs)
    ax.set(xlabel=xlabel, ylabel="test accuracy (%)", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def training_curves(curves: dict[str, list[list[float]]], title: str) -> Any:
    """Test accuracy after each epoch, the mean over seeds as a line and their range as a band."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for i, (name, runs) in enumerate(curves.items()):
        length = min(len(r) for r in runs)
        epochs = list(range(1, length + 1))
        mean = [sum(r[e] for r in runs) / len(runs) for e in range(length)]
        ax.plot(
            epochs,
            mean,
            marker=MARKERS[i % len(MARKERS)],
            color=GREYS[i % 3],
            linestyle=("-", "--", ":")[i % 3],
            markersize=4,
            label=name,
        )
        ax.fill_between(
            epochs,
            [min(r[e] for r in runs) for e in range(length)],
            [max(r[e] for r in runs) for e in range(length)],
            color=GREYS[3],
            alpha=0.3,
        )
    ax.set(xlabel="epoch", ylabel="test accuracy (%)", title=title)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def measured_speedups(rows: list[dict[str, Any]]) -> Any:
    """The packed BNN's measured speed-up (log scale) over the strongest int8 and the strongest
    float32 deployment of each row (the baseline it gains least against, by name), per model,
    batch and thread count, from ``qnnlab bench model`` records; 1 marks parity. Each baseline's
    own figure stays in the records."""
    plt = pyplot()
    rows = [r for r in rows if not r.get("beside_a_busy_process")]
    cpus = list(dict.fromkeys(r["cpu"] for r in rows))
    labels = [
        f"{r['name'].removeprefix('model/')} b{r['shape'].split()[-1]} t{r['threads']}"
        + (f" {r['cpu']}" if len(cpus) > 1 else "")
        for r in rows
    ]
    kinds = ("int8", "float32")
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(rows) + 1.4))
    height = 0.4
    for j, kind in enumerate(kinds):
        values = [
            min((b["speedup"] for name, b in r["baselines"].items() if kind in name), default=float("nan"))
            for r in rows
        ]
        ax.barh(
            [i + j * height for i in range(len(rows))],
            values,
            height=height,
            color=GREYS[j % len(GREYS)],
            edgecolor="black",
            hatch=HATCHES[j % len(HATCHES)],
            label=f"against the strongest {kind}",
        )
    ax.axvline(1, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_yticks([i + height / 2 for i in range(len(rows))], labels)
    ax.set_xlabel("speed-up of the packed BNN (x, log scale; right of 1: faster)")
    ax.set_title(f"Measured on {' and '.join(cpus)}: packed BNN against int8 and float32 deployments", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig
