"""What every timing prints about the machine: the CPU and the int8 units its baselines run on."""

import llvmlite.binding as llvm
import pytest

from qnnlab.timing import cpu_name, int8_units, versus


@pytest.mark.parametrize(
    ("features", "units"),
    [
        ({"amx-int8": True, "avx512vnni": True, "avxvnni": True}, "AMX"),
        ({"amx-int8": False, "avx512vnni": True}, "AVX-512 VNNI"),
        ({"avxvnni": True}, "AVX-VNNI"),
        ({"avx2": True}, "none"),
    ],
)
def test_the_widest_int8_units_are_named(monkeypatch, features, units):
    monkeypatch.setattr(llvm, "get_host_cpu_features", lambda: features)
    assert int8_units() == units


def test_a_row_names_the_cpu_and_its_int8_units():
    row = versus(1.0, {"torch-int8": 2.0, "torch-float32": 8.0}, {"torch-int8": 2.0, "torch-float32": 8.0})
    assert row["cpu"] == cpu_name() and row["int8_units"] == int8_units()
    assert row["baseline"] == "torch-int8" and row["speedup"] == 2.0
