"""The report's outline, as a talk on quantized networks runs: motivation, how it works, results,
costs and gains, findings, questions. Each item is a figure, a table or sentences, with the
command that reproduces it; an item whose records are missing says which command makes them."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import torch

from qnnlab.report import figures
from qnnlab.report.answers import ANSWERS
from qnnlab.report.records import Records

TRICKS = {"tricks-mlp": "MLP", "tricks-cnn": "CNN"}
CURVES = ("full", "float", "no-bn", "sgd-lr0.1", "sgd-lr1", "bop", "ste", "from-float")
STUDIES = {
    "dorefa-mlp": ("DoReFa's W x A x G bits", "W32__A32__G32"),
    "sensitivity-mlp": ("per-layer sensitivity, MLP", "all-float"),
    "sensitivity-cnn": ("per-layer sensitivity, CNN", "all-float"),
    "width-mlp": ("width, MLP", None),
    "width-cnn": ("width, CNN", None),
    "precision-dfxp-mlp": ("propagation vs update bits, dynamic fixed point", None),
    "precision-fixed-mlp": ("propagation vs update bits, fixed point", None),
    "input-mlp": ("input discretization", "float-pixels"),
    "estimators-mlp": ("gradient estimators in training, BNN MLP with stochastic activations", "clipped"),
    "beyond-mlp": (
        "beyond the 2016 recipes: two-step training, distillation, RPReLU, Bi-Real shortcuts, BNN MLP",
        "full",
    ),
    "beyond-cnn": (
        "beyond the 2016 recipes: two-step training, distillation, RPReLU, Bi-Real shortcuts, BNN CNN",
        "full",
    ),
    "gradients-mlp": ("gradient quantization: DoReFa, ZipML levels and dynamic fixed point", "float-errors"),
}


def _split(table: list[dict[str, Any]], pattern: str, keys: tuple[str, str]) -> list[dict[str, Any]]:
    """Rows whose configuration matches ``pattern`` (two groups), with the groups as ``keys``."""
    found = []
    for row in table:
        match = re.fullmatch(pattern, row["configuration"])
        if match:
            found.append({**row, keys[0]: match.group(1), keys[1]: match.group(2)})
    return found


DOREFA_AXES = ("weight bits", "activation bits")
PRECISION_AXES = ("propagation bits P (weights, inputs, errors)", "update bits U (latent weights)")
STUDY_FIGURES = {  # (table, title, curves) -> figure; curves() reads the runs' metrics per epoch
    "dorefa-mlp": lambda t, title, _curves: figures.heatmap(
        t, "rules[*].weight", "rules[*].input", "rules[*].grad", title, DOREFA_AXES, "gradient bits"
    ),
    "sensitivity-mlp": lambda t, title, _curves: figures.heatmap(
        _split(t, r"(only|all-but)-(\w+)", ("binarized", "layer")), "binarized", "layer", None, title
    ),
    "sensitivity-cnn": lambda t, title, _curves: figures.heatmap(
        _split(t, r"(only|all-but)-(\w+)", ("binarized", "layer")), "binarized", "layer", None, title
    ),
    "width-mlp": lambda t, title, _curves: figures.curves(t, "model_options.widths", "case", title, "hidden width"),
    "width-cnn": lambda t, title, _curves: figures.curves(
        t, "model_options.width", "case", title, "channel multiplier"
    ),
    "precision-dfxp-mlp": lambda t, title, _curves: figures.heatmap(
        t, "zip", "latent_quantizer", None, title, PRECISION_AXES
    ),
    "precision-fixed-mlp": lambda t, title, _curves: figures.heatmap(
        t, "zip", "latent_quantizer", None, title, PRECISION_AXES
    ),
    "input-mlp": lambda t, title, _curves: figures.curves(
        _split(t, r"(uniform|zipml|lloydmax)-(\d+)", ("levels", "bits")), "bits", "levels", title, "input bits"
    ),
    "beyond-mlp": lambda t, title, _curves: figures.difference_bars(t, "full", title),
    "beyond-cnn": lambda t, title, _curves: figures.difference_bars(t, "full", title),
    "gradients-mlp": lambda t, title, _curves: figures.difference_bars(t, "float-errors", title),
    "estimators-mlp": lambda t, title, curves: figures.training_curves(
        curves(), f"{title}: test accuracy per epoch (band: seed range)"
    ),
}


@dataclasses.dataclass
class Item:
    title: str
    command: str
    figure: Any = None
    table: list[dict[str, Any]] | None = None
    text: str = ""
    missing: bool = False


@dataclasses.dataclass
class Section:
    id: str
    title: str
    items: list[Item]


def _missing(title: str, command: str) -> Item:
    return Item(title, command, text=f"Left out: no records yet. `{command}` makes them.", missing=True)


def motivation() -> Section:
    return Section(
        "motivation",
        "Motivation",
        [
            Item(
                "Energy per operation and per multiply-accumulate of each kind the recipes use",
                "Horowitz's table in qnnlab/analysis/energy.py",
                figure=figures.energy_per_operation(),
            ),
        ],
    )


def how_it_works() -> Section:
    return Section(
        "how-it-works",
        "How it works",
        [
            Item(
                "Forward map, the gradient each estimator passes back, and stochastic binarization",
                "qnnlab quantizers (the curves are drawn by the quantizers themselves)",
                figure=figures.estimator_curves(),
            ),
            Item(
                "One training step of float, BNN and DoReFa, drawn from the recipes' own configs",
                "qnnlab recipes float|bnn|dorefa (the configs the diagram is drawn from)",
                figure=figures.training_step(),
            ),
        ],
    )


def papers_table(records: Records) -> Item:
    """Each recipe's accuracy in our runs (CPU-scale MLP, full Fashion-MNIST) beside the figure its
    paper reports, with the paper's data set and model: different tasks, shown for context."""
    import csv
    from importlib import resources

    text = (resources.files("qnnlab") / "report" / "papers.csv").read_text()
    ours = {r["configuration"]: r for r in records.table("recipes-mlp")}
    rows = []
    for paper in csv.DictReader(text.splitlines()):
        mine = ours.get(paper["recipe"])
        rows.append(
            {
                "recipe": paper["recipe"],
                "ours: Fashion-MNIST accuracy (%)": f"{mine['mean']:.2f} +- {mine['std']:.2f} (n={mine['n']})"
                if mine
                else "-",
                "paper": paper["paper"],
                "paper's task": f"{paper['dataset']}, {paper['model']}, {paper['variant']}",
                "reported": paper["reported"],
                "source": paper["source"],
            }
        )
    return Item(
        "The recipes beside the figures their papers report (different data sets: for context)",
        "qnnlab sweep table results/cpu/recipes-mlp; the papers' figures: src/qnnlab/report/papers.csv",
        table=rows,
    )


def results(records: Records) -> Section:
    items = [papers_table(records)]
    for study, model in TRICKS.items():
        command = f"qnnlab sweep table results/cpu/{study} --reference full"
        table = records.table(study, "full")
        if not table or "diff" not in table[0]:  # none finished, or not yet the full recipe
            items.append(_missing(f"Tricks ablation, {model}", f"qnnlab sweep cpu/{study} --out DIR"))
            continue
        curves = {k: v for k, v in records.curves(study).items() if k in CURVES}
        if curves:
            items.append(
                Item(
                    f"Training curves of the BNN {model} and some of its changes",
                    f"the metrics.jsonl of each run in results/cpu/{study}",
                    figure=figures.training_curves(curves, f"BNN {model}: test accuracy per epoch (band: seed range)"),
                )
            )
        items.append(
            Item(
                f"Tricks ablation of the BNN recipe, {model}: one change at a time",
                command,
                figure=figures.difference_bars(table, "full", f"BNN {model}, one change at a time"),
            )
        )
    if records.estimator_rows:
        items.append(
            Item(
                "Gradient estimators: bias and variance against the exact gradient",
                "python scripts/estimator_bias_variance.py",
                figure=figures.estimator_bias_variance(records.estimator_rows),
            )
        )
    else:
        items.append(_missing("Gradient estimators: bias and variance", "python scripts/estimator_bias_variance.py"))
    for study in sorted(set(records.sweeps) - set(TRICKS) - set(STUDIES)):  # any other sweep given
        items.append(Item(f"Sweep {study}", f"qnnlab sweep table {records.sweeps[study]}", table=records.table(study)))
    for study, (title, reference) in STUDIES.items():
        table = records.table(study, reference)
        command = f"qnnlab sweep table results/cpu/{study}" + (f" --reference {reference}" if reference else "")
        if table and study in STUDY_FIGURES and (reference is None or "diff" in table[0]):
            figure = STUDY_FIGURES[study](table, title, lambda study=study: records.curves(study))
            items.append(Item(title, command, figure=figure))
        items.append(
            Item(title, command, table=table) if table else _missing(title, f"qnnlab sweep cpu/{study} --out DIR")
        )
    return Section("results", "Results", items)


def costs(records: Records) -> Section:
    items = [
        Item(
            "A training step's energy by phase and kind: float, BNN and DoReFa on one MLP",
            "qnnlab analyze --recipe R --model mlp --set widths --train",
            figure=figures.step_energy(),
        )
    ]
    points = _configurations(records)
    if points:
        items.append(
            Item(
                "Accuracy against the energy of a training step (every configuration of every study)",
                "qnnlab sweep table DIR (costs from each run's result.json)",
                figure=figures.pareto(points, "train_step_pj_per_sample", "training energy (pJ per sample)"),
            )
        )
        items.append(
            Item(
                "Accuracy against the deployed model's size",
                "qnnlab sweep table DIR (costs from each run's result.json)",
                figure=figures.pareto(points, "deployed_weight_bits", "deployed weights (bits)"),
            )
        )
    else:
        items.append(
            _missing("Pareto fronts of accuracy against energy and memory", "qnnlab sweep cpu/tricks-mlp --out DIR")
        )
    if records.bench:
        items.append(
            Item(
                "Measured speed of the packed BNN against float32 and int8 deployments of the float model",
                "qnnlab bench model --model mlp|cnn --batch 1,100 --threads T --json (results/cpu/bench)",
                figure=figures.measured_speedups(records.bench),
            )
        )
    else:
        items.append(_missing("Measured speed against float32 and int8", "qnnlab bench model --json"))
    items.append(_xnor_model(records))
    return Section("costs", "Costs and gains", items)


XNOR_COMMAND = "qnnlab analyze --recipe bnn --model cnn --measure --json results/cpu/bench/analyze-bnn-cnn.json"


def _xnor_model(records: Records) -> Item:
    """XNOR-Net's operation-count speed-up of each binary convolution beside the measured kernel."""
    title = "XNOR-Net's speed-up model beside the measured binary convolution"
    for name, analysis in records.analyses.items():
        rows = [r for r in analysis.get("xnor_speedup", []) if r.get("measured_speedup") is not None]
        if rows:
            where = analysis.get("measured_on", {})
            return Item(
                f"{title} ({name}, measured on {where.get('cpu', '?')}, {where.get('threads', '?')} threads)",
                XNOR_COMMAND,
                table=[
                    {
                        "layer": r["layer"],
                        "input channels": r["channels"],
                        "kernel area": r["kernel_area"],
                        "model (x over float)": round(r["theoretical_speedup"], 1),
                        "measured (x over torch conv2d)": r["measured_speedup"],
                    }
                    for r in rows
                ],
            )
    return _missing(title, XNOR_COMMAND)


def _configurations(records: Records) -> list[dict[str, Any]]:
    """One point per configuration: mean accuracy over seeds and its cost figures."""
    points = []
    for study in records.sweeps:
        by_config: dict[str, list[dict[str, Any]]] = {}
        for record in records.results(study):
            if "test_accuracy" in record["final"] and "error" not in record.get("costs", {"error": 1}):
                by_config.setdefault(record["configuration"], []).append(record)
        for configuration, found in by_config.items():
            points.append(
                {
                    "study": study,
                    "configuration": configuration,
                    "accuracy": 100 * sum(r["final"]["test_accuracy"] for r in found) / len(found),
                    **{k: found[0]["costs"][k] for k in ("train_step_pj_per_sample", "deployed_weight_bits")},
                }
            )
    return points


INSIDE_RUNS = {
    "float": ("float",),
    "BinaryConnect": ("binaryconnect", "binaryconnect-paper"),
    "BNN": ("bnn", "bnn-paper"),
}


def inside(records: Records) -> Section:
    runs = {}
    for label, names in INSIDE_RUNS.items():
        found = records.inside(names)
        name = next((n for n in names if n in found), None)
        if name:
            runs[label if name == names[0] else f"{label}: {name}"] = found[name]
    command = "qnnlab demo, or qnnlab eval RUN --inside on a study's run folders"
    if not runs:
        return Section("inside", "Inside the networks", [_missing("First-layer weights and histograms", command)])
    shown = ", ".join(runs)
    weights = figures.first_layer_weights(runs)
    items = [
        Item(f"First-layer weights: {shown}", command, figure=weights)
        if weights
        else _missing("First-layer weights of an MLP or CNN on images", command),
        Item(f"Latent weights by layer: {shown}", command, figure=figures.layer_histograms(runs, "weights")),
        Item(
            f"Activations before each input quantizer: {shown}",
            command,
            figure=figures.layer_histograms(runs, "activations"),
        ),
    ]
    return Section("inside", "Inside the networks", items)


def findings(records: Records) -> Section:
    sentences = []
    for study, model in TRICKS.items():
        table = records.table(study, "full")
        if not table or "diff" not in table[0]:
            continue
        changes = [r for r in table if r["configuration"] != "full"]
        worst = min(changes, key=lambda r: r["diff"])
        unclear = [r["configuration"] for r in changes if abs(r["diff"]) <= 2 * (r["diff_spread"] or 0)]
        full = next(r for r in table if r["configuration"] == "full")
        sentences.append(
            f"BNN {model} ({full['mean']:.2f}% in full): '{worst['configuration']}' costs most, "
            f"{worst['diff']:+.2f} +- {worst['diff_spread']:.2f} points; within two seed spreads of the full recipe: "
            f"{', '.join(unclear) or 'none'} (`qnnlab sweep table results/cpu/{study} --reference full`)."
        )
    if records.estimator_rows:
        sentences.append(_estimator_finding(records.estimator_rows))
    sentences += _blocked_gradients(records)
    text = " ".join(sentences) if sentences else "No study records were given."
    return Section("findings", "Findings", [Item("Generated from the records", "qnnlab report DIR...", text=text)])


def _blocked_gradients(records: Records) -> list[str]:
    """The share of a binarized layer's inputs outside [-1, 1], where the clipped STE passes none."""
    found = records.inside(INSIDE_RUNS["BNN"])
    if not found:
        return []
    name, record = next(iter(found.items()))
    shares = [
        (number, activation["outside_unit"])
        for number, layer in enumerate(record["layers"], 1)
        for activation in layer["activations"].values()
        if activation["quantizer"].startswith("sign") and activation["count"]
    ]
    if not shares:
        return []
    listed = ", ".join(f"layer {n} {100 * share:.0f}%" for n, share in shares)
    return [
        f"In the trained {name} network ({record['study']}, {record['samples']} test images), the inputs of sign lie "
        f"outside [-1, 1], where the clipped straight-through estimator passes no gradient, for {listed} "
        f"(`qnnlab eval RUN --inside`; the histograms under 'Inside the networks')."
    ]


def _estimator_finding(rows: list[dict[str, Any]]) -> str:
    parts = []
    for law in sorted({r["law"] for r in rows}):
        mine: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            if r["law"] == law:
                mine.setdefault(r["estimator"], []).append(r)
        mean = {
            name: {
                k: sum(r[k] for r in found) / len(found)
                for k in ("relative_bias", "relative_variance", "bias_standard_error")
            }
            for name, found in mine.items()
        }
        unbiased = [n for n, m in mean.items() if m["relative_bias"] <= 2 * m["bias_standard_error"]]
        best = min(unbiased, key=lambda n: mean[n]["relative_variance"]) if unbiased else None
        least_variance = min(mean, key=lambda n: mean[n]["relative_variance"])
        parts.append(
            f"with the {law} law, unbiased within two standard errors: {', '.join(unbiased) or 'none'}"
            + (f" (lowest variance {best}, {mean[best]['relative_variance']:.2f})" if best else "")
            + f"; the lowest variance of all is {least_variance}'s ({mean[least_variance]['relative_variance']:.3f}) "
            f"at a bias of {mean[least_variance]['relative_bias']:.2f}"
        )
    return "Estimators: " + "; ".join(parts) + " (`python scripts/estimator_bias_variance.py --summary FILE`)."


def _necessary_tricks(table: list[dict[str, Any]]) -> str:
    changes = [r for r in table if r["configuration"] != "full" and r["diff"] == r["diff"]]
    hurt = sorted((r for r in changes if r["diff"] < -2 * (r["diff_spread"] or 0)), key=lambda r: r["diff"])
    free = [r["configuration"] for r in changes if abs(r["diff"]) <= 2 * (r["diff_spread"] or 0)]
    listed = ", ".join(f"{r['configuration']} ({r['diff']:+.2f} +- {r['diff_spread']:.2f})" for r in hurt)
    return (
        f"Changes that cost more than two seed spreads: {listed or 'none'}. Within two spreads of the full "
        f"recipe, so not shown to matter at this scale: {', '.join(free) or 'none'}."
    )


def _sensitive_layers(table: list[dict[str, Any]]) -> str:
    single = sorted((r for r in table if r["configuration"].startswith("only-")), key=lambda r: r["diff"])
    everything = next((r for r in table if r["configuration"] == "all-binary"), None)
    if not single:
        return "The records hold no single-layer runs."
    worst = single[0]
    share = f", {worst['diff'] / everything['diff']:.0%} of binarizing every layer" if everything else ""
    order = ", ".join(f"{r['configuration'][5:]} {r['diff']:+.2f}" for r in single)
    return (
        f"Binarizing one layer at a time costs (points, against all float): {order}. The most sensitive is "
        f"{worst['configuration'][5:]}{share}."
    )


def _bits_that_matter(table: list[dict[str, Any]]) -> str:
    effects = []
    for axis, name in (
        ("rules[*].weight", "weights"),
        ("rules[*].input", "activations"),
        ("rules[*].grad", "gradients"),
    ):
        values = list(dict.fromkeys(r[axis] for r in table if axis in r))
        if len(values) < 2:
            continue
        mean = {
            v: sum(r["mean"] for r in table if r[axis] == v) / sum(1 for r in table if r[axis] == v) for v in values
        }
        effects.append((mean[values[-1]] - mean[values[0]], name, values[0], values[-1]))
    if not effects:
        return "The records hold no W x A x G grid."
    effects.sort(reverse=True)
    return (
        "Going from the fewest to the most bits, averaged over the other two axes: "
        + ", ".join(f"{name} {low} -> {high}: {gain:+.2f} points" for gain, name, low, high in effects)
        + f". {effects[0][1].capitalize()} need the most bits."
    )


def _width_gap(table: list[dict[str, Any]]) -> str:
    widths = list(dict.fromkeys(r["model_options.widths"] for r in table))
    gaps = []
    for width in widths:
        mine = {r["case"]: r["mean"] for r in table if r["model_options.widths"] == width}
        if {"float", "bnn"} <= set(mine):
            gaps.append(f"{width} {mine['float'] - mine['bnn']:.2f}")
    return "Float minus BNN accuracy (points) by width: " + (", ".join(gaps) or "no width has both") + "."


def _input_bits(table: list[dict[str, Any]]) -> str:
    parts = [f"{r['configuration']} {r['diff']:+.2f}" for r in table if r["configuration"] != "float-pixels"]
    return "Difference from float pixels (points): " + ", ".join(parts) + "."


def _zipml_gradients(table: list[dict[str, Any]]) -> str:
    mean = {r["configuration"]: r for r in table}
    pairs = [("zipml-16", "dorefa-4bit", "16 levels (4 bits)"), ("zipml-64", "dorefa-6bit", "64 levels (6 bits)")]
    parts = [
        f"at {label} ZipML's levels give {mean[z]['diff']:+.2f} +- {mean[z]['diff_spread']:.2f} and DoReFa's uniform "
        f"ones {mean[d]['diff']:+.2f} +- {mean[d]['diff_spread']:.2f}"
        for z, d, label in pairs
        if z in mean and d in mean
    ]
    return (
        "On the errors of the DoReFa W1 A2 MLP, against float errors (points): "
        + ("; ".join(parts) or "no pair yet")
        + ". On the input data (the input discretization study) ZipML's unbiased levels were no better than a "
        "uniform grid."
    )


QUESTIONS = (
    ("Which tricks are really necessary?", "tricks-mlp", "full", _necessary_tricks),
    ("Are early layers more sensitive to quantization?", "sensitivity-mlp", "all-float", _sensitive_layers),
    ("Which of weights, activations and gradients needs the most bits?", "dorefa-mlp", None, _bits_that_matter),
    ("Do wider networks close the gap between float and binary?", "width-mlp", None, _width_gap),
    ("How much does discretizing the input cost?", "input-mlp", "float-pixels", _input_bits),
    ("Does ZipML-style quantization help beyond the input data?", "gradients-mlp", "float-errors", _zipml_gradients),
)


def _hidden_costs() -> str:
    """From the cost model: what stays expensive in a BNN training step once the products are binary."""
    from qnnlab.analysis import profile
    from qnnlab.data import ImageData
    from qnnlab.run import build_model, resolve

    config = resolve("bnn", {"model": "mlp", "model_options": {"widths": [256, 256, 256]}})
    prof = profile(
        build_model(config, ImageData.empty((1, 28, 28), 10)),
        torch.randn(100, 1, 28, 28),
        optimizer=config.optimizer,
        loss=config.loss,
        clip_latent=True,
    )
    memory = prof.memory_energy_pj() / prof.energy_pj()
    ranked = "; ".join(f"{c['cost']} {c['share']:.1%}" for c in prof.hidden_costs()[:4])
    return (
        f"In one training step of the BNN 784-3x256-10 MLP (batch 100, Adam, 45 nm model) memory traffic is "
        f"{memory:.0%} of the energy; the costs that stay in high precision, by share: {ranked}. Binary products "
        f"are not where training's energy goes."
    )


def _gains(speed: dict[str, Any] | None) -> str | None:
    if not speed:
        return None
    return (
        f"Measured on {speed['cpu']} ({speed['threads']} threads) by qnnlab demo: the packed BNN against the "
        f"same MLP in torch float32, {speed['batch1']['speedup']:.1f}x at batch 1 and "
        f"{speed['batch100']['speedup']:.1f}x at batch 100, in a file {speed['ratio']:.1f}x smaller; the "
        f"energy model's figures per configuration are in the Costs section."
        + (
            f" Against the strongest int8 of the float model ({speed['batch1']['int8_baseline']} at batch 1, "
            f"{speed['batch100']['int8_baseline']} at batch 100): {speed['batch1']['speedup_vs_int8']:.2f}x and "
            f"{speed['batch100']['speedup_vs_int8']:.2f}x; below 1 the int8 model is faster."
            if "int8_baseline" in speed["batch1"]
            else " Against int8: qnnlab bench model."
        )
    )


def questions(records: Records) -> Section:
    items = [
        Item("Where are the hidden costs?", "qnnlab analyze --recipe bnn --model mlp --train", text=_hidden_costs())
    ]
    gains = _gains(records.speed)
    items.append(
        Item("How can the computational gains be shown explicitly?", "qnnlab demo (its speed.json)", text=gains)
        if gains
        else Item(
            "How can the computational gains be shown explicitly?",
            "qnnlab demo",
            text="Open: `qnnlab demo` measures the packed BNN against float.",
            missing=True,
        )
    )
    for question, study, reference, answer in QUESTIONS:
        command = f"qnnlab sweep cpu/{study} --out DIR"
        table = records.table(study, reference)
        if not table or (reference and not any(r["configuration"] == reference for r in table)):
            items.append(Item(question, command, text=f"Open: `{command}` records what settles it.", missing=True))
            continue
        table_command = f"qnnlab sweep table results/cpu/{study}" + (f" --reference {reference}" if reference else "")
        items.append(Item(question, table_command, text=answer(table)))
    for question, command, answer in ANSWERS:
        text = answer(records)
        items.append(
            Item(question, command, text=text)
            if text
            else Item(question, command, text=f"Open: `{command}` needs records to settle it.", missing=True)
        )
    return Section("questions", "Questions", items)


def outline(records: Records) -> list[Section]:
    return [
        motivation(),
        how_it_works(),
        results(records),
        costs(records),
        inside(records),
        findings(records),
        questions(records),
    ]
