"""The suite's HTML report (contrastseg.report) on a fake batch built here: no notebook runs, no model trains.

The batch holds a claims-ledger notebook (results with a ``ledger`` of three claims, one per verdict, and its
``forest.png``) and a table notebook whose ``table`` records have one seed and a per-run time column, each with an
executed copy (a minimal notebook) that the report converts to HTML.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import nbformat
import pytest
from matplotlib.figure import Figure

from contrastseg.report import PRESET_BANNERS, is_time_column, notebook_html, write_report
from contrastseg.results import save_results

LEDGER = [
    {"paper": "pixel_contrast", "claim": "Pixel contrast improves on cross-entropy.", "row": "pixel contrast",
     "baseline": "CE", "metric": "miou", "paper_evidence": "+0.91 mIoU (README; unverified)", "difference": 0.0123,
     "ci_low": 0.004, "ci_high": 0.0201, "seeds": 5, "verdict": "supported", "preset": "laptop",
     "per_seed": [0.01, 0.012, 0.015, 0.011, 0.013]},
    {"paper": "contextrast", "claim": "BANE improves boundary IoU.", "row": "CCL + BANE", "baseline": "CCL",
     "metric": "boundary_iou", "paper_evidence": "none found", "difference": -0.02, "ci_low": -0.031,
     "ci_high": -0.009, "seeds": 5, "verdict": "contradicted", "preset": "laptop",
     "per_seed": [-0.02, -0.01, -0.03, -0.02, -0.02]},
    {"paper": "rc2l", "claim": "RC²L improves on supervised-only training at 1/8 labels.", "row": "RC²L, 1/8",
     "baseline": "supervised, 1/8", "metric": "miou", "paper_evidence": "none found", "difference": 0.004,
     "ci_low": float("nan"), "ci_high": float("nan"), "seeds": 1, "verdict": "inconclusive", "preset": "laptop",
     "per_seed": [0.004]},
]
COSTS = [{"row": "CE", "parameters": 128961, "all_parameters": 128961, "flops": 20809728.0},
         {"row": "pixel contrast", "parameters": 128961, "all_parameters": 135329, "flops": 20809728.0}]
ONE_SEED_TABLE = [  # ``summarize`` records of one seed, with a per-run time column that the report leaves out
    {"row": "CE", "miou_mean": 0.5, "miou_std": float("nan"), "seeds": 1, "method_active": float("nan"),
     "train_seconds": 12.3},
    {"row": "pixel contrast", "miou_mean": 0.52, "miou_std": 0.0, "seeds": 1, "method_active": 1.0,
     "train_seconds": 30.1},
]


def tiny_png(path: Path) -> Path:
    """A small PNG written with matplotlib at a low dpi."""
    fig = Figure(figsize=(1, 1))
    fig.subplots().plot([0, 1], [0, 1])
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=10)
    return path


def executed_notebook(path: Path) -> Path:
    """A minimal executed notebook: one code cell with its stream output."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cell = nbformat.v4.new_code_cell("print('miou 0.5')", execution_count=1)
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="miou 0.5\n")]
    nb.cells = [nbformat.v4.new_markdown_cell("# A table notebook"), cell]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """A laptop batch folder with the two notebooks' results, figures and executed copies, and its report."""
    preset_dir = tmp_path_factory.mktemp("out") / "laptop"
    claims_dir, table_dir = preset_dir / "claims", preset_dir / "table_one_seed"
    save_results(claims_dir, {"preset": "laptop", "seeds": [0, 1, 2, 3, 4],
                              "weights": {"pixel contrast": 0.1, "Contextrast": 0.3}, "ledger": LEDGER,
                              "inference_cost": COSTS, "inference_cost_verdict": "supported"})
    tiny_png(claims_dir / "forest.png")
    tiny_png(claims_dir / "why_curves.png")
    save_results(table_dir, {"preset": "laptop", "seeds": [0], "table": ONE_SEED_TABLE, "train_seconds": 42.5})
    tiny_png(table_dir / "miou.png")
    tiny_png(table_dir / "differences.png")
    outcomes = [
        {"notebook": "notebooks/claims.ipynb", "title": "Claims ledger: every central claim, paired over seeds, "
         "with a verdict", "status": "ok", "seconds": 12.0, "results_dir": str(claims_dir),
         "output": str(executed_notebook(preset_dir / "claims.ipynb"))},
        {"notebook": "notebooks/pixel_contrast/table_one_seed.ipynb", "title": "One seed", "status": "ok",
         "seconds": 3.5, "results_dir": str(table_dir),
         "output": str(executed_notebook(preset_dir / "table_one_seed.ipynb"))},
    ]
    page = write_report(preset_dir, outcomes, title="contrastseg notebook suite: laptop").read_text()
    return preset_dir, outcomes, page


def between(page: str, start: str, end: str) -> str:
    return page[page.index(start):page.index(end, page.index(start))]


def test_banner_says_what_the_preset_can_show(batch, tmp_path):
    _, outcomes, page = batch
    assert page.index('id="banner"') < page.index('id="ledger"')
    assert html.escape(PRESET_BANNERS["laptop"], quote=True) in page  # the preset, read from the saved results
    smoke = write_report(tmp_path / "smoke", outcomes, preset="smoke").read_text()
    assert "a pipeline check" in smoke and "mean nothing" in smoke
    paper = write_report(tmp_path / "paper", [dict(outcomes[1], parameters={
        "preset": "paper:pixel_contrast/cityscapes/hrnet_w48"})]).read_text()
    assert "the papers&#x27; own settings" in paper and "pixel_contrast/cityscapes/hrnet_w48" in paper


def test_ledger_opens_the_page_with_verdict_badges_and_its_forest_plot(batch):
    _, _, page = batch
    ledger = between(page, '<h2 id="ledger">', '<h2 id="contents">')
    assert page.index('<h2 id="ledger">') < page.index('<h2 id="nb0">')  # before the first notebook section
    header = re.findall(r"<th>(.*?)</th>", ledger)
    assert header == ["claim", "row - baseline", "metric", "difference [95 % CI]", "seeds", "verdict",
                      "paper&#x27;s evidence"]
    badges = re.findall(r'<span class="badge ([a-z]+)">([a-z]+)</span>', ledger)
    assert badges == [("supported", "supported"), ("contradicted", "contradicted"),
                      ("inconclusive", "inconclusive"), ("supported", "supported")]  # the last: inference cost
    assert "+0.012 [+0.004, +0.020]" in ledger and "-0.020 [-0.031, -0.009]" in ledger
    assert "+0.004 (n=1; no interval)" in ledger  # NaN interval, read back from results.json as "nan"
    assert "No method changes the inference cost." in ledger
    assert ledger.index("</table>") < ledger.index('alt="forest.png"')  # the forest plot right below
    assert "Contextrast 0.3" in ledger and "pixel contrast 0.1" in ledger and "seeds 0, 1, 2, 3, 4" in ledger

    contents = between(page, '<h2 id="contents">', "</table>")
    assert re.findall(r'href="([^"]+)"', contents)[0] == "#ledger"
    assert "3 claims: 1 supported, 1 contradicted, 1 inconclusive" in contents
    assert page.count('class="ledger"') == 1 and page.count('alt="forest.png"') == 1  # not repeated below
    claims_section = between(page, '<h2 id="nb0">', '<h2 id="nb1">')
    assert "<h3>inference_cost</h3>" in claims_section and "128,961" in claims_section


def test_records_tables_put_the_row_name_first_and_show_no_spread_for_one_seed(batch):
    _, _, page = batch
    section = between(page, '<h2 id="nb1">', '<h2 id="reported">')
    table = between(section, "<h3>table</h3>", "</table>")
    assert re.findall(r"<th>(.*?)</th>", table)[0] == "row"
    claims_costs = between(page, "<h3>inference_cost</h3>", "</table>")
    assert re.findall(r"<th>(.*?)</th>", claims_costs)[0] == "row"
    assert "0.500 (n=1)" in table and "0.520 (n=1)" in table
    assert "± 0.0" not in page and "+- 0.0" not in page and "&plusmn; 0.0" not in page


def test_time_columns_are_left_out_with_a_note(batch):
    _, _, page = batch
    section = between(page, '<h2 id="nb1">', '<h2 id="reported">')
    assert not re.findall(r"<th>[^<]*seconds[^<]*</th>", page)
    assert "12.3" not in section and "42.5" not in section
    assert "benchmarks/step_time.py" in section and "train_seconds" in section  # named in the note only
    assert all(is_time_column(name) for name in ("train_seconds", "seconds", "step time", "s/step", "step_ms"))
    assert not any(is_time_column(name) for name in ("miou_mean", "seeds", "steps", "per_class.sidewalk"))


def test_difference_figures_come_first(batch):
    _, _, page = batch
    section = between(page, '<h2 id="nb1">', '<h2 id="reported">')
    assert section.index('alt="differences.png"') < section.index('alt="miou.png"')


def test_each_executed_notebook_is_linked_as_html(batch):
    preset_dir, outcomes, page = batch
    for outcome, stem in zip(outcomes, ("claims", "table_one_seed")):
        copy = preset_dir / f"{stem}.html"
        assert copy.is_file() and "miou 0.5" in copy.read_text(encoding="utf-8")
        assert f'<a href="{stem}.html">executed notebook (HTML)</a>' in page
    assert "http" not in page  # the report itself stays self-contained


def test_notebook_html_keeps_a_current_copy_and_a_failed_conversion_is_reported(tmp_path):
    notebook = executed_notebook(tmp_path / "nb.ipynb")
    copy = notebook_html(notebook)
    assert copy == tmp_path / "nb.html"
    before = copy.stat().st_mtime_ns
    assert notebook_html(notebook) == copy and copy.stat().st_mtime_ns == before  # current: not converted again
    assert notebook_html(tmp_path / "missing.ipynb") is None and notebook_html("") is None

    broken = tmp_path / "broken.ipynb"
    broken.write_text("{ not a notebook", encoding="utf-8")
    outcome = {"notebook": "notebooks/broken.ipynb", "title": "Broken", "status": "ok", "seconds": 1.0,
               "output": str(broken)}
    page = write_report(tmp_path, [outcome], preset="smoke").read_text()
    assert "could not be converted to HTML" in page and "executed notebook (HTML)" not in page
    assert '<h2 id="environment">' in page  # the page went on
