"""The report: every section from the records given, figures that decode, and the page as a
browser shows it (headless Chromium through Selenium, where both are installed)."""

import base64
import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from qnnlab.analysis.estimators import measure
from qnnlab.analysis.inside import inside
from qnnlab.cli import main
from qnnlab.data import ImageData, load
from qnnlab.report import figures
from qnnlab.report.records import Records
from qnnlab.report.sections import outline
from qnnlab.run.config import resolve
from qnnlab.run.model import build_model
from qnnlab.sweep import run_sweep

SECTIONS = ("motivation", "how-it-works", "results", "costs", "inside", "findings", "questions")
TRICKS = """base: {recipe: bnn, model: mlp-small, model_options: {widths: [16]}, dataset: fashion-mnist-mini,
       epochs: 2, limit_steps: 5, threads: 1}
cases: {full: {}, no-bn: {norm: none}, ste: {"rules[*].input": "sign@ste"}}
seeds: 2
"""


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A report of a small tricks sweep and an estimator measurement, as the real commands write them."""
    root = tmp_path_factory.mktemp("report")
    (root / "tricks.yaml").write_text(TRICKS)
    run_sweep(root / "tricks.yaml", root / "results" / "tricks-mlp", jobs=2, progress=False)
    images = load("fashion-mnist-mini")
    rows = measure(images.test_x[:16], images.test_y[:16], ("clipped", "muprop"), samples=50, hidden=4)
    (root / "results" / "estimator-bias-variance.json").write_text(json.dumps(rows))
    assert main(["report", str(root / "results"), "--out", str(root / "out" / "report.html")]) == 0
    return root / "out" / "report.html"


def test_the_page_has_every_section_and_inline_figures_that_decode(report):
    page = report.read_text()
    for section in SECTIONS:
        assert f"<section id='{section}'>" in page
    figures = re.findall(r"src='data:image/png;base64,([^']+)'", page)
    assert len(figures) >= 6 and all(base64.b64decode(f).startswith(b"\x89PNG") for f in figures)
    assert "http://" not in page and "https://" not in page  # readable offline and when mailed
    assert "BNN MLP (" in page and "costs most" in page  # a finding generated from the sweep's records
    assert "Training curves of the BNN MLP" in page  # from the runs' metrics.jsonl
    assert "memory traffic is" in page and "Open: `qnnlab demo` measures" in page  # hidden costs; no speed record
    assert "Left out: no records yet. `qnnlab sweep cpu/dorefa-mlp --out DIR`" in page  # absent study named


def test_the_markdown_twin_links_image_files_that_exist(report):
    markdown = report.with_suffix(".md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert links and all((report.parent / link).is_file() for link in links)
    assert markdown.count("\n## ") == len(SECTIONS)


def test_findings_name_the_changes_within_the_seed_spread(report, tmp_path):
    records = Records.find([report.parent.parent / "results"])
    findings = next(s for s in outline(records) if s.id == "findings").items[0].text
    assert "within two seed spreads of the full recipe" in findings and "Estimators:" in findings


def test_report_input_errors_are_clear(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r.html")]) == 2
    assert "is not a folder of records" in capsys.readouterr().err
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r.pdf")]) == 2
    assert "name an .html file" in capsys.readouterr().err


def _chrome():
    webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium (make test installs it)")
    driver_path = shutil.which("chromedriver")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not (driver_path and browser):
        pytest.skip("headless Chromium needs Debian's chromium and chromium-driver (make test installs them as root)")
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.binary_location = browser
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver_path), options=options)


def test_the_report_in_a_real_browser(report):
    driver = _chrome()
    try:
        driver.set_window_size(1280, 2000)
        driver.get(Path(report).resolve().as_uri())
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.alt]);"
        )
        assert len(images) >= 6 and all(done and width > 0 for done, width, _ in images), images
        ids = driver.execute_script("return Array.from(document.querySelectorAll('section')).map(s => s.id);")
        assert list(ids) == list(SECTIONS)
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert not errors, errors
        driver.save_screenshot(str(report.with_suffix(".png")))
    finally:
        driver.quit()
    assert report.with_suffix(".png").stat().st_size > 10_000


def _fake_sweep(folder: Path, configurations: dict[str, dict[str, str]], seeds=(0, 1)):
    """A sweep folder in the real record format: sweep.json and one result.json per run."""
    runs = []
    for index, (configuration, labels) in enumerate(configurations.items()):
        for seed in seeds:
            name = f"{configuration}/seed{seed}"
            runs.append({"name": name, "configuration": configuration, "labels": labels, "seed": seed, "config": {}})
            record = {
                "status": "done",
                "name": name,
                "labels": labels,
                "seed": seed,
                "config": {},
                "final": {"test_accuracy": 0.5 + 0.01 * index + 0.001 * seed},
                "best": {},
                "costs": {"train_step_pj_per_sample": 1e6 * (index + 1), "deployed_weight_bits": 1000 * (index + 1)},
            }
            (folder / name).mkdir(parents=True)
            (folder / name / "result.json").write_text(json.dumps(record))
    (folder / "sweep.json").write_text(json.dumps({"source": "test", "runs": runs}))


def test_each_study_gets_its_figure(tmp_path):
    results = tmp_path / "results"
    grid = {
        f"{w}__{a}__{g}": {"rules[*].weight": w, "rules[*].input": a, "rules[*].grad": g}
        for w in ("W1", "W32")
        for a in ("A2", "A32")
        for g in ("G8", "G32")
    }
    _fake_sweep(results / "dorefa-mlp", grid)
    _fake_sweep(results / "sensitivity-mlp", {c: {"case": c} for c in ("all-float", "only-first", "all-but-first")})
    _fake_sweep(
        results / "width-mlp",
        {f"{c}__{w}": {"case": c, "model_options.widths": w} for c in ("float", "bnn") for w in ("w128", "w256")},
    )
    _fake_sweep(results / "input-mlp", {c: {"case": c} for c in ("float-pixels", "uniform-1", "zipml-1", "uniform-2")})
    _fake_sweep(results / "recipes-mlp", {c: {"case": c} for c in ("float", "bnn")})
    _fake_sweep(results / "estimators-mlp", {"ste": {"case": "ste"}})  # running: its reference not yet done
    _fake_sweep(results / "tricks-cnn", {"no-bn": {"case": "no-bn"}})
    _fake_sweep(results / "beyond-cnn", {c: {"case": c} for c in ("full", "shortcut", "plus")})
    assert main(["report", str(results), "--out", str(tmp_path / "r.html")]) == 0
    markdown = (tmp_path / "r.md").read_text()
    beyond_cnn = "beyond the 2016 recipes: two-step training, distillation, RPReLU, Bi-Real shortcuts, BNN CNN"
    for title in (
        "DoReFa's W x A x G bits",
        "per-layer sensitivity, MLP",
        "width, MLP",
        "input discretization",
        beyond_cnn,
    ):
        assert f"![{title}]" in markdown  # the study's figure, besides its table
    assert "Accuracy against the energy of a training step" in markdown
    assert "weights W1 -> W32: +4.00 points" in markdown and "Weights need the most bits." in markdown
    assert "The most sensitive is first" in markdown and "Float minus BNN accuracy (points) by width: w128" in markdown
    bnn_row = next(line for line in markdown.splitlines() if line.startswith("| bnn |"))
    assert "51.05 +- 0.07 (n=2)" in bnn_row and "0.96% error" in bnn_row  # ours beside the BNN paper's figure
    assert "Left out: no records yet. `qnnlab demo, or qnnlab eval RUN --inside" in markdown
    assert "Left out: no records yet. `qnnlab analyze --recipe bnn --model cnn --measure" in markdown


def test_the_xnor_net_model_sits_beside_the_measured_convolutions(tmp_path):
    bench = tmp_path / "results" / "cpu" / "bench"
    bench.mkdir(parents=True)
    rows = [{"layer": "3", "channels": 64, "kernel_area": 9, "theoretical_speedup": 57.6, "measured_speedup": 10.2}]
    record = {"xnor_speedup": rows, "measured_on": {"cpu": "Test CPU", "threads": 2}}
    (bench / "analyze-bnn-cnn.json").write_text(json.dumps(record))
    assert main(["report", str(tmp_path / "results"), "--out", str(tmp_path / "r.html")]) == 0
    markdown = (tmp_path / "r.md").read_text()
    assert "XNOR-Net's speed-up model beside the measured binary convolution (bnn-cnn, measured on Test CPU" in markdown
    assert "| 3 | 64 | 9 | 57.60 | 10.20 |" in markdown


def test_benchmark_records_of_several_cpus_are_drawn_side_by_side_each_named(tmp_path):
    def row(cpu):
        speedups = {
            "torch-float32": {"ms": 9.0, "speedup": 9.0},
            "ort-float32": {"ms": 12.0, "speedup": 12.0},
            "torch-int8-dynamic": {"ms": 3.0, "speedup": 3.0},
            "ort-int8-static": {"ms": 2.0, "speedup": 2.0},
        }
        return {"name": "model/mlp", "shape": "batch 100", "cpu": cpu, "threads": 1, "baselines": speedups}

    bench = tmp_path / "results" / "cpu" / "bench"
    (bench / "znver2").mkdir(parents=True)
    (bench / "model-mlp-threads1.jsonl").write_text(json.dumps(row("CPU A")) + "\n")
    (bench / "znver2" / "model-mlp-threads1.jsonl").write_text(json.dumps(row("CPU B (znver2)")) + "\n")
    records = Records.find([tmp_path / "results"])
    assert [r["cpu"] for r in records.bench] == ["CPU A", "CPU B (znver2)"]
    axes = figures.measured_speedups(records.bench).axes[0]
    assert [t.get_text() for t in axes.get_yticklabels()] == ["mlp b100 t1 CPU A", "mlp b100 t1 CPU B (znver2)"]
    assert "CPU A and CPU B (znver2)" in axes.get_title()
    int8_bars, float32_bars = axes.containers
    assert [bar.get_width() for bar in int8_bars] == [2.0, 2.0]  # the strongest of each kind
    assert [bar.get_width() for bar in float32_bars] == [9.0, 9.0]


def test_inside_the_networks_is_drawn_from_the_runs_inside_records(tmp_path):
    results = tmp_path / "results"
    _fake_sweep(results / "recipes-mlp", {c: {"case": c} for c in ("float", "bnn")})
    for recipe in ("float", "bnn"):
        model = build_model(resolve(recipe, {"model": "mlp-small"}), ImageData.empty((1, 28, 28), 10))
        (results / "recipes-mlp" / recipe / "seed0" / "inside.json").write_text(
            json.dumps(inside(model, torch.rand(20, 1, 28, 28) * 2 - 1))
        )
    assert main(["report", str(results), "--out", str(tmp_path / "r.html")]) == 0
    markdown = (tmp_path / "r.md").read_text()
    for title in ("First-layer weights: float, BNN", "Latent weights by layer: float, BNN", "Activations before"):
        assert f"![{title}" in markdown
    assert "In the trained bnn network (recipes-mlp, 20 test images), the inputs of sign lie outside" in markdown
    (results / "recipes-mlp" / "bnn" / "seed0" / "inside.json").write_text('{"layers": [{"weights": 3}]}')
    assert main(["report", str(results), "--out", str(tmp_path / "r.html")]) == 2
