"""glibc's thresholds are raised where there is glibc, and nothing breaks elsewhere."""

import platform

import torch

from qnnlab.train.memory import keep_freed_memory


def test_thresholds_are_set_on_glibc():
    assert keep_freed_memory() is (platform.libc_ver()[0] == "glibc")
    x = torch.ones(4096, 4096)  # a 64 MiB tensor still allocates and frees normally
    assert float(x.sum()) == 4096 * 4096
