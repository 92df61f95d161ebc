"""The ``qnnlab`` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from qnnlab import quant
from qnnlab.data.errors import DatasetError


def _first_doc_line(cls: type) -> str:
    return getattr(cls, "summary", "") or (cls.__doc__ or "").strip().splitlines()[0]


def _spec_with_defaults(name: str, cls: type) -> str:
    params = ",".join(f"{p.name}={p.format(p.default)}" for p in cls.params)
    return name + (f":{params}" if params else "")


def cmd_quantizers(args: argparse.Namespace) -> int:
    """List every registered quantizer, alias and estimator with its paper."""
    print("Quantizers (spec with defaults; QUANTIZER[:ARGS][@ESTIMATOR[:ARGS]]):")
    _print_rows(
        [
            (_spec_with_defaults(n, c), _first_doc_line(c) + f"  [estimators: {', '.join(c.estimators)}]", c.paper)
            for n, c in sorted(quant.QUANTIZERS.items())
        ]
    )
    print("\nAliases:")
    _print_rows([(alias, f"= {q}@{e}", "") for alias, (q, e) in sorted(quant.ALIASES.items())])
    print("\nGradient estimators:")
    _print_rows([(_spec_with_defaults(n, c), _first_doc_line(c), c.paper) for n, c in sorted(quant.ESTIMATORS.items())])
    return 0


def _print_rows(rows: list[tuple[str, str, str]]) -> None:
    width = max(len(r[0]) for r in rows)
    for spec, summary, paper in rows:
        print(f"  {spec:<{width}}  {summary}" + (f"\n  {'':<{width}}  ({paper})" if paper and paper != "-" else ""))


def cmd_recipes(args: argparse.Namespace) -> int:
    from qnnlab.run.config import FIELDS, recipe_names, resolve

    if args.name:
        import yaml

        print(yaml.safe_dump(resolve(args.name).to_dict(), sort_keys=False), end="")
        return 0
    for name in recipe_names():
        print(f"  {name:<26} {resolve(name).description}")
    print("\nFields (qnnlab recipes NAME prints a recipe's resolved config):")
    _print_rows([(k, f"[{unit}] {doc}", "") for k, (unit, doc) in FIELDS.items()])
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from qnnlab import data, models

    for name in models.available():
        print(f"  {name:<12} {models.describe(name)}")
    print("\nData sets: " + ", ".join(data.available()))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from qnnlab.run.config import parse_overrides
    from qnnlab.train import Trainer, resolve
    from qnnlab.train.trainer import RUN_ENVIRONMENT

    overrides = parse_overrides(args.set or [])
    for key in ("model", "dataset", "epochs", "batch_size", "lr", "seed", "device", "threads", "data_root"):
        value = getattr(args, key)
        if value is not None:
            overrides[key] = value
    if args.allow_degenerate:
        overrides["allow_degenerate"] = True
    config = resolve(args.recipe or "float", overrides)
    out = Path(args.out or f"runs/{config.recipe}-{config.model}-{config.dataset}-seed{config.seed}")
    environment = {key: getattr(args, key) for key in RUN_ENVIRONMENT if getattr(args, key) is not None}
    trainer = Trainer(
        config,
        out,
        resume=args.resume,
        quiet=args.quiet,
        environment=environment,
        requested={**overrides, **({"recipe": config.recipe} if args.recipe else {})},
    )
    metrics = trainer.run()
    if trainer.dist.is_main:
        final = metrics[-1] if metrics else {}
        print(json.dumps({"out": str(out), **final}))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from qnnlab.run.evaluate import evaluate_checkpoint, record_inside

    if args.inside:
        if args.packed or args.mode != "binary" or args.split != "test":
            raise ValueError("--inside records the trained model as it is; drop --packed, --mode and --split")
        print(json.dumps({"inside": record_inside(args.checkpoint, args.data_root)}))
        return 0
    if args.packed:
        if args.mode != "binary" or args.split != "test":
            raise ValueError("--packed compares the binary model on the test set; drop --mode and --split")
        from qnnlab.run.deploy import compare_with_checkpoint

        print(json.dumps(compare_with_checkpoint(args.packed, args.checkpoint, args.data_root)))
        return 0
    print(json.dumps(evaluate_checkpoint(args.checkpoint, args.mode, args.split, args.data_root, args.seed)))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Train the demo's recipes on the embedded data set, measure their costs and speed, write the report."""
    from qnnlab.demo import run_demo

    run_demo(args.out, args.jobs, args.repeats)
    return 0


def _train_step_line(row: dict) -> str:
    top = ", ".join(f"{k} {v:+.1f} ms" for k, v in row["extra_ms_by_category"].items() if abs(v) >= 0.05)
    return (
        f"{row['name']:<34} {row['qnnlab_ms']:8.1f} ms  float {row['baseline_ms']:8.1f} ms  "
        f"x{row['ratio_to_float']:.2f}  extra: {top}"
    )


def _layout_line(row: dict) -> str:
    return (
        f"{row['name']:<24} channels-last {row['qnnlab_ms']:8.1f} ms  NCHW {row['baseline_ms']:8.1f} ms  "
        f"speed-up x{row['speedup']:.2f}"
    )


def cmd_bench_steps(args: argparse.Namespace) -> int:
    import torch

    from qnnlab.bench import train_step
    from qnnlab.timing import cpu_name

    recipes = [r for r in args.recipes.split(",") if r]
    rows, line = (train_step.run_layout, _layout_line) if args.layout else (train_step.run, _train_step_line)
    measured_on = {"cpu": cpu_name(), "threads": torch.get_num_threads()}
    for row in rows(recipes, args.model, args.batch, args.repeats):
        row = {**row, **measured_on}
        text = f"{line(row)}  [{row['cpu']}, {row['threads']} threads]"
        print(json.dumps(row) if args.json else text, flush=True)
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    import torch

    from qnnlab import data as datasets
    from qnnlab.analysis import EnergyTable, profile
    from qnnlab.analysis.report import full_report, plot
    from qnnlab.run import build_model, load_trained, resolve

    if args.batch < 1:
        raise ValueError(f"--batch {args.batch}: count at least one sample")
    if args.checkpoint:  # a trained run: its own config and weights
        if args.recipe or args.model or args.input_shape or args.dataset:
            raise ValueError(
                "--checkpoint analyzes the run as it was trained; drop --recipe, --model, --dataset and --input-shape"
            )
        model, data, info = load_trained(args.checkpoint, args.data_root, need_images=False)
        config = info["config"]
    else:
        config = resolve(args.recipe or "float", {"model": args.model} if args.model else {})
        if args.input_shape:
            try:
                shape = tuple(int(v) for v in args.input_shape.split(","))
            except ValueError:
                raise ValueError(f"--input-shape {args.input_shape!r} must be integers like 1,28,28") from None
            data = datasets.ImageData.empty(shape, args.classes)
        else:
            data = datasets.load(args.dataset or config.dataset, args.data_root)
        model = build_model(config, data)
    if isinstance(data, datasets.TextData):
        example = torch.randint(0, data.vocab_size, (args.batch, config.seq_len))
    else:
        example = torch.randn(args.batch, *data.shape)
    energy = EnergyTable.from_file(args.energy_table) if args.energy_table else None
    prof = profile(
        model,
        example,
        train=args.train,
        optimizer=args.optimizer or config.optimizer,
        loss=config.loss,
        clip_latent=bool(config.clip_latent),
        energy=energy,
        memory_level=args.memory,
    )
    if args.measure:
        prof.measure_binary_convolutions()
    print(f"{config.recipe} {config.model}, batch {args.batch}, {'training step' if args.train else 'inference'}")
    print(full_report(prof))
    if args.json:
        from qnnlab.storage import atomic_write

        record = prof.to_dict()
        if args.measure:
            from qnnlab.timing import cpu_name

            record["measured_on"] = {"cpu": cpu_name(), "threads": torch.get_num_threads()}
        atomic_write(Path(args.json), lambda p: p.write_text(json.dumps(record, indent=1)))
    if args.plot:
        plot(prof, args.plot)
    return 0


def _print_bench(rows, as_json: bool) -> None:
    for row in rows:
        if as_json:
            print(json.dumps(row), flush=True)
        else:
            others = "".join(
                f"  {name} {b['ms']:.3f} ms (x{b['speedup']:.2f})" for name, b in row.get("baselines", {}).items()
            )
            print(
                f"{row['name']:<22} {row['shape']:<18} qnnlab {row['qnnlab_ms']:10.3f} ms  "
                f"{row.get('baseline', 'baseline')} {row['baseline_ms']:10.3f} ms  speedup {row['speedup']:6.2f}x"
                + others
                + (
                    f"  [{row['cpu']}, int8 units: {row.get('int8_units', 'not recorded')}, {row['threads']} threads]"
                    if "cpu" in row
                    else ""
                ),
                flush=True,
            )


def _int_list(text: str, flag: str, example: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v]
    except ValueError:
        raise ValueError(f"{flag} {text!r} must be integers like {example}") from None
    if not values or min(values) < 1:
        raise ValueError(f"{flag} {text!r} must be positive integers like {example}")
    return values


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def cmd_bench_gemm(args: argparse.Namespace) -> int:
    from qnnlab.bench import gemm

    sizes = _int_list(args.sizes, "--sizes", "256,1024,4096")
    gemv = [] if args.gemv.strip() == "0" else _int_list(args.gemv, "--gemv", "4096,16384")
    _set_threads(args.threads)
    _print_bench(gemm.run(sizes, args.repeats, gemv, args.bitserial), args.json)
    return 0


def cmd_bench_model(args: argparse.Namespace) -> int:
    from qnnlab.bench import model

    batches = _int_list(args.batch, "--batch", "1,100")
    _set_threads(args.threads)
    _print_bench(model.run(args.model, batches, args.repeats, busy=args.busy, recipe=args.recipe), args.json)
    return 0


def cmd_bench_table(args: argparse.Namespace) -> int:
    from qnnlab.bench import table

    rows = table.read(args.files)
    if not rows:
        raise ValueError(f"no rows in {', '.join(args.files)}: give the files qnnlab bench ... --json wrote")
    summary = table.summarize(rows)
    print(json.dumps(summary, indent=1) if args.json else table.markdown(summary))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from qnnlab.run.deploy import export_checkpoint

    print(json.dumps(export_checkpoint(args.checkpoint, args.out)))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    if args.out:
        from qnnlab.report import build

        print(json.dumps(build(args.folders, args.out)))
        return 0
    from qnnlab.train.report import collect, markdown

    for folder in args.folders:
        if not Path(folder).is_dir():
            raise ValueError(f"{folder} is not a folder of runs")
        rows = collect(folder)
        print(json.dumps(rows, indent=1) if args.json else markdown(rows))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from qnnlab import sweep

    if args.what in ("status", "table"):
        if args.folder is None:
            raise ValueError(f"qnnlab sweep {args.what} DIR: name the sweep's output folder")
        if args.what == "status":
            from qnnlab.sweep.progress import describe, snapshot
            from qnnlab.sweep.records import read_plan

            print("\n".join(describe(snapshot(Path(args.folder), read_plan(Path(args.folder))))))
            return 0
        from qnnlab.sweep.table import render, rows

        style = "csv" if args.csv else "markdown" if args.markdown else "text"
        print(render(rows(args.folder, args.reference, args.metric, args.which), style))
        return 0
    if args.what == "list":
        print("\n".join(sweep.studies()))
        return 0
    if args.folder is not None:
        raise ValueError(f"qnnlab sweep FILE takes its output folder as --out, not as {args.folder!r}")
    if args.out is None:
        raise ValueError("qnnlab sweep FILE --out DIR: name the folder the runs go to")
    counts = sweep.run_sweep(
        args.what,
        args.out,
        args.jobs,
        args.engine,
        args.retry_failed,
        progress=not args.quiet,
        address=args.address,
        cpus_per_run=args.cpus_per_run,
        gpus_per_run=args.gpus_per_run,
    )
    print(json.dumps({"out": args.out, **counts}))
    return 1 if counts.get("failed") else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qnnlab", description="Train, analyse and run quantized neural networks.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("quantizers", help="list quantizers and gradient estimators with their papers")
    p.set_defaults(func=cmd_quantizers)
    p = sub.add_parser("recipes", help="list recipes and config fields, or print one recipe resolved")
    p.add_argument("name", nargs="?", help="a recipe name or .yaml file")
    p.set_defaults(func=cmd_recipes)
    p = sub.add_parser("models", help="list models and data sets")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser(
        "demo", help="six recipes and a tricks ablation on the embedded data set: accuracy, energy, speed, report"
    )
    p.add_argument("--out", default="runs/demo", help="folder of the demo's runs and report (resumable)")
    p.add_argument("--jobs", type=int, default=2, help="runs trained at a time")
    p.add_argument("--repeats", type=int, default=15, help="timed rounds of the packed-against-float comparison")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="train a recipe on a model and data set")
    p.add_argument("--recipe", help="recipe name (qnnlab recipes) or a .yaml file (default float)")
    p.add_argument("--model", help="model name (qnnlab models)")
    p.add_argument("--dataset", help="data set name (qnnlab models lists them)")
    p.add_argument("--data-root", help="folder holding the data set's files")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="cpu or cuda")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any config field (YAML value)")
    p.add_argument("--out", help="run folder (default runs/RECIPE-MODEL-DATASET-seedN)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last checkpoint, with its saved config; "
        "--device, --threads and --data-root given now say where it continues",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    p.add_argument(
        "--allow-degenerate",
        action="store_true",
        help="train even if a quantizer is constant on the first batch or a layer gets no gradient",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("analyze", help="count operations, energy and memory of a recipe's model")
    p.add_argument("--recipe", help="recipe name or .yaml file (default float)")
    p.add_argument("--model", help="model name (default: the recipe's)")
    p.add_argument("--dataset", help="data set giving the input shape and classes")
    p.add_argument("--data-root", help="folder holding the data set's files")
    p.add_argument("--input-shape", help="C,H,W instead of a data set")
    p.add_argument("--classes", type=int, default=10, help="classes, with --input-shape")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--train", action="store_true", help="count backward and update too")
    p.add_argument("--optimizer", help="sgd, adam, shift_adamax or bop (default: the recipe's)")
    p.add_argument("--memory", default="dram", choices=("dram", "sram"), help="price of memory traffic")
    p.add_argument("--energy-table", help="file of 'name pJ' lines overriding the Horowitz table")
    p.add_argument(
        "--checkpoint",
        help="a run folder or its checkpoint: analyze that trained model (its config and "
        "weights; binary kernel repetition needs the weights)",
    )
    p.add_argument(
        "--measure",
        action="store_true",
        help="time each binary convolution's packed kernel against float (XNOR-Net speed-up)",
    )
    p.add_argument("--json", help="write everything to this JSON file")
    p.add_argument("--plot", help="write a stacked-bar PNG of energy per phase and kind")
    p.set_defaults(func=cmd_analyze)

    bench = sub.add_parser("bench", help="benchmarks measured side by side in one run").add_subparsers(
        dest="bench", metavar="BENCHMARK", required=True
    )
    p = bench.add_parser(
        "gemm", help="packed binary GEMM (with the measured bound), GEMV, weight-only and bit-serial vs torch fp32/int8"
    )
    p.add_argument("--sizes", default="256,1024,4096")
    p.add_argument(
        "--gemv", default="4096,16384", help="K of the batch-1 K x K products, binary and weight-only (0: skip)"
    )
    p.add_argument("--bitserial", type=int, default=2048, help="N of the bit-serial k-bit products (0: skip)")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, help="threads for both (default: torch's)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=cmd_bench_gemm)

    p = bench.add_parser(
        "model",
        help="packed BNN runtime against the float model in torch float32 / int8, ONNX Runtime and OpenVINO",
    )
    p.add_argument("--model", default="mlp", help="a model name: mlp, cnn, or a variant such as mlp-small")
    p.add_argument("--recipe", default="bnn", help="the binary recipe exported (bnn, bnn-plus, ...; random weights)")
    p.add_argument("--batch", default="1,100")
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--threads", type=int, help="threads for both (default: torch's)")
    p.add_argument("--busy", action="store_true", help="time beside a second process that keeps one core busy")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=cmd_bench_model)

    p = bench.add_parser(
        "table", help="medians and ranges over the runs kept in bench --json records (README's speed tables)"
    )
    p.add_argument("files", nargs="+", help="JSON-lines files of qnnlab bench ... --json")
    p.add_argument("--json", action="store_true", help="the summary as JSON instead of a markdown table")
    p.set_defaults(func=cmd_bench_table)

    steps = (
        (
            "train-step",
            "time per training step of recipes against the float recipe",
            "bnn,binaryconnect,xnor,dorefa,qnn,bnn-shift",
            "mlp",
            False,
        ),
        ("layout", "training step with channels-last images against contiguous NCHW ones", "float,bnn", "cnn", True),
    )
    for name, help_text, recipes, model, layout in steps:
        p = bench.add_parser(name, help=help_text)
        p.add_argument("--recipes", default=recipes)
        p.add_argument("--model", default=model)
        p.add_argument("--batch", type=int, default=100)
        p.add_argument("--repeats", type=int, default=10)
        p.add_argument("--json", action="store_true", help="one JSON object per line")
        p.set_defaults(func=cmd_bench_steps, layout=layout)

    p = sub.add_parser(
        "sweep",
        help="train every run of a sweep file; status and table of a sweep folder",
        description="qnnlab sweep FILE --out DIR [--jobs N] [--engine local|ray|submitit] | "
        "qnnlab sweep status DIR | qnnlab sweep table DIR [--csv|--markdown] | "
        "qnnlab sweep list (the shipped studies)",
    )
    p.add_argument("what", help="a sweep file or shipped study (cpu/tricks-mlp), or status, table, list")
    p.add_argument("folder", nargs="?", help="the sweep's output folder (status, table)")
    p.add_argument("--out", help="folder of the sweep's run folders")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time; the CPU cores are split between them")
    p.add_argument("--engine", default="local", help="local (worker processes), ray or submitit")
    p.add_argument("--address", help="ray: address of an existing cluster (default: start a local instance)")
    p.add_argument("--cpus-per-run", type=float, default=0, help="ray/submitit: CPUs per run (default cores/jobs)")
    p.add_argument("--gpus-per-run", type=float, default=0, help="ray/submitit: GPUs per run (runs on cuda if > 0)")
    p.add_argument("--retry-failed", action="store_true", help="train failed runs again")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.add_argument("--reference", help="table: the configuration the others are compared with")
    p.add_argument("--metric", help="table: metric (default test_accuracy, or val_bpc for language models)")
    p.add_argument("--which", default="final", help="table: the final or the best epoch's metric")
    p.add_argument("--csv", action="store_true", help="table as CSV")
    p.add_argument("--markdown", action="store_true", help="table as Markdown")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("report", help="a report of study records (HTML and Markdown), or a table of run folders")
    p.add_argument("folders", nargs="+", help="folders of records: results/, sweep folders, run folders")
    p.add_argument("--out", help="write the report to this .html file (its .md and figures beside it)")
    p.add_argument("--json", action="store_true", help="without --out: the run table as JSON")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("export", help="write a trained binary model as a packed file for qnnlab.runtime")
    p.add_argument("checkpoint", help="a run folder or its checkpoint.safetensors")
    p.add_argument("out", help="the packed model file to write")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("eval", help="evaluate a checkpoint")
    p.add_argument("checkpoint", help="a run folder or its checkpoint.safetensors")
    p.add_argument("--mode", default="binary", help="binary, latent or ensemble:N")
    p.add_argument(
        "--packed",
        metavar="FILE",
        help="also run this packed export of the checkpoint (qnnlab export) "
        "and count the test images on which both predict the same",
    )
    p.add_argument(
        "--inside",
        action="store_true",
        help="instead write inside.json next to the checkpoint: histograms of the latent weights and of what "
        "each quantizer receives, and first-layer weights (what sweeps record; the report draws them)",
    )
    p.add_argument("--split", default="test", help="test (images) or valid/test (text)")
    p.add_argument("--data-root", help="folder holding the data set's files")
    p.add_argument("--seed", type=int, default=0, help="seeds the networks that ensemble:N samples")
    p.set_defaults(func=cmd_eval)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from qnnlab.train.trainer import TrainingDiverged

    try:
        return int(args.func(args))
    except BrokenPipeError:  # the reader left (qnnlab ... | head): stop quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (ValueError, DatasetError, OSError) as exc:
        print(f"qnnlab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except TrainingDiverged as exc:
        print(f"qnnlab {args.command}: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print(f"qnnlab {args.command}: interrupted; resume with --resume", file=sys.stderr)
        return 130
    except Exception as exc:  # the last net: a one-line error, the traceback only when asked for
        if os.environ.get("QNNLAB_DEBUG"):
            raise
        print(
            f"qnnlab {args.command}: error: {type(exc).__name__}: {exc} (an input qnnlab could not read, or a "
            "bug: QNNLAB_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
