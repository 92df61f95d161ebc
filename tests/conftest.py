"""Shared test helpers: data sets that may be absent on a machine are skipped with the reason."""

from pathlib import Path

import pytest

from qnnlab.data.sources import cache_dir
from qnnlab.data.text import SHAKESPEARE_SHARED


def have_tinyshakespeare() -> bool:
    return any((Path(d) / "input.txt").is_file() for d in (SHAKESPEARE_SHARED, cache_dir() / "tinyshakespeare"))


needs_shakespeare = pytest.mark.skipif(not have_tinyshakespeare(),
                                       reason="Tiny Shakespeare not found beside the checkout (../shared/data) "
                                              "or in the cache")
