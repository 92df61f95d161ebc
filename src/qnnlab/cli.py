"""The ``qnnlab`` command line."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from qnnlab import quant


def _first_doc_line(cls: type) -> str:
    return getattr(cls, "summary", "") or (cls.__doc__ or "").strip().splitlines()[0]


def cmd_quantizers(args: argparse.Namespace) -> int:
    """List every registered quantizer, alias and estimator with its paper."""
    rows = []
    for name, cls in sorted(quant.QUANTIZERS.items()):
        params = ",".join(f"{p.name}={p.format(p.default)}" for p in cls.params)
        spec = name + (f":{params}" if params else "")
        rows.append((spec, _first_doc_line(cls) + f"  [estimators: {', '.join(cls.estimators)}]", cls.paper))
    print("Quantizers (spec with defaults; QUANTIZER[:ARGS][@ESTIMATOR[:ARGS]]):")
    _print_rows(rows)
    print("\nAliases:")
    _print_rows([(alias, f"= {q}@{e}", "") for alias, (q, e) in sorted(quant.ALIASES.items())])
    print("\nGradient estimators:")
    est_rows = []
    for name, cls in sorted(quant.ESTIMATORS.items()):
        params = ",".join(f"{p.name}={p.format(p.default)}" for p in cls.params)
        est_rows.append((name + (f":{params}" if params else ""), _first_doc_line(cls), cls.paper))
    _print_rows(est_rows)
    return 0


def _print_rows(rows: list[tuple[str, str, str]]) -> None:
    width = max(len(r[0]) for r in rows)
    for spec, summary, paper in rows:
        print(f"  {spec:<{width}}  {summary}" + (f"\n  {'':<{width}}  ({paper})" if paper and paper != "-" else ""))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qnnlab", description="Train, analyse and run quantized neural networks.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("quantizers", help="list quantizers and gradient estimators with their papers")
    p.set_defaults(func=cmd_quantizers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except ValueError as exc:
        print(f"qnnlab {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
