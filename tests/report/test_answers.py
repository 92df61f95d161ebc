"""The report's computed answers: their numbers come from the records and from qnnlab's kernels."""

from pathlib import Path

import pytest

from qnnlab.report import answers
from qnnlab.report.records import Records

RESULTS = Path(__file__).resolve().parents[2] / "results"


def test_the_kernel_backed_answers_state_what_they_computed():
    assert "codes: True" in answers.bit_serial_products()
    assert "gradient [1.0, 0.0, 0.0, 0.0]" in answers.max_pool_gradients()
    assert "-3 -> -4" in answers.shift_batchnorm() and "0 -> 0" in answers.shift_batchnorm()


@pytest.mark.skipif(not (RESULTS / "cpu" / "recipes-mlp").is_dir(), reason="the committed study records")
def test_the_record_backed_answers_read_the_recipes_study():
    records = Records.find([RESULTS])
    gaps = answers.generalisation(records)
    assert gaps and "float +" in gaps and "bnn +" in gaps
    xnor = answers.xnor_against_bnn(records)
    assert xnor and "plain BNN's" in xnor
    assert "less energy than float" in answers.where_benefits_come_from(records)


def test_without_records_the_record_backed_answers_are_open(tmp_path):
    (tmp_path / "speed.json").write_text("{}")
    records = Records.find([tmp_path])
    assert answers.generalisation(records) is None and answers.xnor_against_bnn(records) is None


@pytest.mark.skipif(not (RESULTS / "cpu" / "bench").is_dir(), reason="the committed benchmark records")
def test_the_report_reads_the_benchmark_records_and_draws_them():
    from qnnlab.report import figures

    records = Records.find([RESULTS])
    assert records.bench and all("baselines" in row and row["cpu"] for row in records.bench)
    assert figures.measured_speedups(records.bench).axes[0].get_xscale() == "log"
