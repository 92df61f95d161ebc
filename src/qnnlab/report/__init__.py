"""The report: records -> figures -> pages (``qnnlab report DIR... --out report.html``).

``build`` finds the sweeps and measurements under the given folders (``records``), lays them out
as a talk on quantized networks (``sections``, figures drawn by ``figures``) and writes one
self-contained HTML file and the same content as Markdown (``page``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qnnlab.report.page import write
from qnnlab.report.records import Records
from qnnlab.report.sections import outline

TITLE = "Quantized neural networks: what each bit costs and where the gains are"


def build(folders: list[str | Path], out: str | Path) -> dict[str, Any]:
    out = Path(out)
    if out.suffix != ".html":
        raise ValueError(f"--out {out}: name an .html file (the Markdown version is written beside it)")
    return write(outline(Records.find(folders)), out, TITLE)


__all__ = ["build"]
