"""Study 5: each gradient estimator's bias and variance against the exact gradient of the expected
loss of a network small enough to enumerate (``qnnlab.analysis.estimators``), for both laws of
stochastic binarization and three networks (seeds), on 64 Fashion-MNIST test images.

    python scripts/estimator_bias_variance.py [OUT.json] [--samples N] [--seeds S]
    python scripts/estimator_bias_variance.py --summary results/cpu/estimator-bias-variance.json

writes the rows (one per law, seed and estimator) atomically and prints the tables; --summary
prints the mean and range over seeds of a file written before.
"""

import argparse
import json
import sys
from pathlib import Path

from qnnlab import data
from qnnlab.analysis.estimators import describe, measure, summarize
from qnnlab.storage import atomic_write


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="results/cpu/estimator-bias-variance.json")
    parser.add_argument("--samples", type=int, default=2000, help="draws per estimator")
    parser.add_argument("--seeds", type=int, default=3, help="networks drawn")
    parser.add_argument("--summary", metavar="FILE", help="only summarize the rows of FILE")
    args = parser.parse_args()
    if args.summary:
        try:
            print(summarize(json.loads(Path(args.summary).read_text())))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            parser.error(f"{args.summary}: not a file of estimator rows ({exc})")
        return 0
    images = data.load("fashion-mnist-mini")
    rows = []
    for law in ("hard", "sigmoid"):
        for seed in range(args.seeds):
            found = measure(images.test_x[:64], images.test_y[:64], samples=args.samples, law=law, seed=seed)
            rows += [{**row, "seed": seed} for row in found]
            print(describe(found), flush=True)
    atomic_write(Path(args.out), lambda p: p.write_text(json.dumps(rows, indent=1) + "\n"))
    print(summarize(rows))
    print(f"wrote {len(rows)} rows to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
