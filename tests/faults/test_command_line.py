"""Bad values on the command line: each command stops with one line naming the value and the fix
(exit status 2), before it trains, measures or writes anything."""

import pytest

from qnnlab.cli import main

pytestmark = pytest.mark.bad_input

MINI = ["--model", "mlp-small", "--dataset", "fashion-mnist-mini"]
CASES = {
    "analyze with a batch of 0": (["analyze", "--recipe", "bnn", *MINI, "--batch", "0"], "--batch 0"),
    "analyze of an unknown recipe": (["analyze", "--recipe", "bnnn"], "unknown recipe 'bnnn'"),
    "analyze of an unknown model": (["analyze", "--recipe", "bnn", "--model", "resnet1000"], "resnet1000"),
    "analyze with a malformed input shape": (["analyze", "--input-shape", "28x28"], "--input-shape"),
    "analyze with a missing energy table": (["analyze", *MINI, "--energy-table", "{dir}/none.txt"], "none.txt"),
    "train of an unknown data set": (["train", "--dataset", "imagenet22k", "--out", "{dir}/r"], "imagenet22k"),
    "train with an unknown field": (["train", *MINI, "--set", "depth=3", "--out", "{dir}/r"], "depth"),
    "train with a malformed rule": (["train", *MINI, "--set", "rules=[{{weight: sing}}]", "--out", "{dir}/r"], "sing"),
    "train on a missing device": (["train", *MINI, "--device", "tpu", "--out", "{dir}/r"], "tpu"),
    "train with a missing init_from": (["train", *MINI, "--set", "init_from={dir}/none", "--out", "{dir}/r"], "none"),
    "train with a recipe file that is missing": (["train", "--recipe", "{dir}/r.yaml", "--out", "{dir}/r"], "r.yaml"),
    "bench gemm with sizes of text": (["bench", "gemm", "--sizes", "big"], "--sizes"),
    "bench model of an unknown model": (["bench", "model", "--model", "transformer"], "transformer"),
    "bench model with batch 0": (["bench", "model", "--batch", "0"], "--batch"),
    "sweep with no jobs": (["sweep", "cpu/tricks-mlp", "--out", "{dir}/s", "--jobs", "0"], "--jobs"),
    "sweep of an unknown study": (["sweep", "cpu/tricks-rnn", "--out", "{dir}/s"], "tricks-rnn"),
    "sweep without --out": (["sweep", "cpu/tricks-mlp"], "--out"),
    "sweep with an unknown engine": (["sweep", "cpu/tricks-mlp", "--out", "{dir}/s", "--engine", "dask"], "dask"),
    "report to a non-html file": (["report", "{dir}", "--out", "{dir}/r.pdf"], ".html"),
    "eval --packed with a missing file": (["eval", "{dir}", "--packed", "{dir}/none.qnn"], "{dir}"),
    "eval --inside with --mode": (["eval", "{dir}", "--inside", "--mode", "latent"], "--inside"),
    "eval --inside of a missing run": (["eval", "{dir}/none", "--inside"], "none"),
    "export to a folder": (["export", "{dir}", "{dir}"], "{dir}"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_bad_command_line_value_is_one_line(tmp_path, capsys, case):
    argv, words = CASES[case]
    assert main([a.format(dir=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words.format(dir=tmp_path) in err, err
    assert not (tmp_path / "r").exists() and not (tmp_path / "s").exists()
