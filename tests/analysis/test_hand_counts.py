"""The profiler against the hand-derived table of docs/cost-accounting.md, line by line."""

from pathlib import Path

import torch

from qnnlab import models
from qnnlab.analysis import profile
from qnnlab.run.config import resolve

DOC = Path(__file__).resolve().parents[2] / "docs" / "cost-accounting.md"


def hand_table():
    rows = []
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[4].isdigit():
            rows.append((cells[0], cells[1], cells[2], cells[3], int(cells[4])))
    return rows


def test_bnn_mlp_counts_match_the_documented_derivation():
    config = resolve("bnn")
    model = models.build(
        "mlp",
        shape=(1, 28, 28),
        classes=10,
        norm=config.norm,
        activation=config.activation,
        output_norm=config.output_norm,
        rules=config.rules,
        widths=[16, 8],
    )
    prof = profile(model, torch.randn(10, 1, 28, 28), optimizer="adam", clip_latent=True)
    table = hand_table()
    assert len(table) > 60
    counted = {(lc.name, p, o, k): int(n) for lc in prof.layers for (p, o, k), n in lc.counts.items() if n}
    documented = {(layer, phase, op, kind): count for layer, phase, op, kind, count in table}
    assert counted == documented  # every line of the doc, and nothing the doc leaves out
