"""Shared test helpers: data sets that may be absent on a machine are skipped with the reason."""

from pathlib import Path

import pytest

from qnnlab.data.sources import cache_dir

SHARED_SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare"


def shakespeare_root() -> str | None:
    """The folder holding Tiny Shakespeare's input.txt: the cache, or the shared/ folder beside the checkout."""
    for folder in (cache_dir() / "tinyshakespeare", SHARED_SHAKESPEARE):
        if (folder / "input.txt").is_file():
            return str(folder)
    return None


needs_shakespeare = pytest.mark.skipif(
    shakespeare_root() is None, reason="Tiny Shakespeare not found beside the checkout (../shared/data) or in the cache"
)
