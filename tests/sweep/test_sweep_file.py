"""Sweep files: expansion into runs, labels, rule paths, and errors that name the file and the line."""

import pytest

from qnnlab.sweep import SweepError, check_models, find, load, studies
from qnnlab.sweep.spec import parse

BASE = "base: {recipe: bnn, model: mlp-small, dataset: fashion-mnist-mini, epochs: 2}\n"


def test_cases_zip_grid_and_seeds_expand_to_their_product():
    runs, _ = parse(
        BASE
        + """
cases: {full: {}, no-bn: {norm: none}}
zip: {lr: [0.1, 0.01], momentum: [0.9, 0.5]}
grid: {batch_size: [50, 100]}
seeds: [0, 3]
"""
    )
    assert len(runs) == 2 * 2 * 2 * 2
    run = next(r for r in runs if r.name == "no-bn__lr=0.01,momentum=0.5__batch_size=100/seed3")
    assert run.config["norm"] == "none" and run.config["lr"] == 0.01 and run.config["momentum"] == 0.5
    assert run.config["batch_size"] == 100 and run.config["seed"] == 3 and run.config["recipe"] == "bnn"
    assert run.labels == {"case": "no-bn", "zip": "lr=0.01,momentum=0.5", "batch_size": "batch_size=100"}


def test_rule_paths_set_an_existing_rule_or_append_one():
    runs, _ = parse(
        BASE
        + """
grid:
  "rules[*].input": {ste: "sign@ste"}
  "rules[last].keep": [true]
"""
    )
    rules = runs[0].config["rules"]
    assert rules[0] == {"match": "*", "weight": "sign", "input": "sign@ste"}  # the recipe's rule, edited
    assert rules[1] == {"match": "first", "input": "float"}  # untouched
    assert rules[2] == {"match": "last", "keep": True}  # appended: later rules win
    assert runs[0].configuration == "ste__last.keep=True"


def test_named_zip_columns_share_one_label_and_cases_may_change_the_recipe():
    runs, _ = parse("""base: {model: mlp-small, dataset: fashion-mnist-mini, epochs: 1, model_options: {widths: [8]}}
cases: {float: {recipe: float}, bnn: {recipe: bnn}}
zip:
  "rules[*].weight": {P6: "dfxp:bits=6", P8: "dfxp:bits=8"}
  "rules[*].input": {P6: "dfxp:bits=6", P8: "dfxp:bits=8"}
""")
    assert [r.configuration for r in runs] == ["float__P6", "float__P8", "bnn__P6", "bnn__P8"]
    assert runs[0].config["recipe"] == "float" and runs[2].config["clip_latent"] == 1.0  # bnn's own field
    assert all(r.config["model_options"] == {"widths": [8]} for r in runs)  # base fields apply to every recipe


def test_floats_are_read_as_users_write_them():
    runs, _ = parse(BASE + "grid: {lr: [1e-3, 2E-4]}\n")
    assert [r.config["lr"] for r in runs] == [0.001, 0.0002]


@pytest.mark.parametrize(
    "text, line, words",
    [
        (BASE + "grid:\n  optimiser: [sgd]\n", 3, "unknown field 'optimiser'"),
        (BASE + "grid:\n  lr: []\n", 3, "axis is empty"),
        (BASE + "cases:\n  a: {}\n  b:\n    epochs: ten\n", 5, "epochs='ten' should be a int"),
        (BASE + "grids: {lr: [0.1]}\n", 2, "unknown top-level key"),
        (BASE + "grid:\n  'rules[*].wieght': [sign]\n", 3, "rule key 'wieght' is unknown"),
        (BASE + "seeds: -1\n", 2, "give a count"),
        (BASE + "zip: {lr: [0.1, 0.2], momentum: [0.9]}\n", 2, "equal lengths"),
        (BASE + "grid: {seed: [1, 2]}\n", 2, "top-level 'seeds'"),
        ("base: {recipe: nope}\n", 1, "unknown recipe 'nope'"),
    ],
)
def test_a_malformed_sweep_file_names_the_file_the_line_and_the_problem(text, line, words):
    with pytest.raises(SweepError) as error:
        parse(text, "study.yaml")
    assert f"study.yaml, line {line}" in str(error.value) and words in str(error.value)


def test_a_bad_quantizer_spec_stops_the_sweep_before_any_run(tmp_path):
    runs, _ = parse(BASE + "grid: {'rules[*].weight': [sign, 'sgn']}\n")
    with pytest.raises(SweepError, match=r"study\.yaml: configuration all\.weight=sgn: .*sgn"):
        check_models(runs, "study.yaml")


def test_every_shipped_study_expands_and_builds():
    names = studies()
    assert {"cpu/tricks-mlp", "cpu/dorefa-mlp", "cpu/sensitivity-cnn", "paper/tricks-mlp"} <= set(names)
    for name in names:
        runs, _ = load(find(name))
        assert runs and len({r.name for r in runs}) == len(runs)
    dorefa, _ = load(find("cpu/dorefa-mlp"))
    assert len({r.configuration for r in dorefa}) == 64 and {r.seed for r in dorefa} == {0, 1, 2}


def test_a_missing_file_or_study_is_named():
    with pytest.raises(SweepError, match="neither a sweep file nor a shipped study"):
        find("cpu/no-such-study")
    with pytest.raises(SweepError, match="does not exist"):
        load("missing.yaml")


def test_model_options_add_to_the_recipes_own():
    runs, _ = parse(
        "base: {recipe: dropconnect, model: mlp-small, dataset: fashion-mnist-mini, model_options: {widths: [8]}}\n"
    )
    assert runs[0].config["model_options"] == {"dropconnect": 0.5, "widths": [8]}
