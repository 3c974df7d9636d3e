"""The papermill batch (contrastseg.suite), its report and the results helpers, on small notebooks built here.

One batch runs once per module (3 kernels); the resume test works on a copy of its folder, so the read-only tests
never see a rerun. Kernel starts are about 1 s each; the file runs in well under a minute on 2 cores.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import torch

from contrastseg import paths
from contrastseg.overrides import parse_overrides
from contrastseg.report import ENVIRONMENT_PACKAGES, environment, write_report
from contrastseg.results import load_results, read_records, results_dir_for, save_figure, save_results
from contrastseg.suite import CELL_TIMEOUTS, PRESETS, format_failures, load_manifest, main, run_suite
from contrastseg.tables import reported_numbers, summarize

PARAMS = 'preset = "smoke"\nresults_dir = ""'

GOOD = """\
miou = {miou}
per_class = {{"road": 0.91234, "car": 0.45678}}
record("miou", miou)
save_results(results_dir, {{"miou": miou, "per_class": per_class, "preset": preset, "label": label}})
fig = Figure(figsize=(2, 2))
fig.subplots().plot([0, 1], [0, 1])
save_figure(fig, results_dir, "curve")
"""

IMPORTS = """\
from matplotlib.figure import Figure
from contrastseg.results import record, save_figure, save_results
"""


def write_notebook(path: Path, cells: list[str], params: str = PARAMS) -> Path:
    """A notebook whose first code cell is the `parameters` cell, with the python3 kernelspec."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    first = nbformat.v4.new_code_cell(params)
    first.metadata["tags"] = ["parameters"]
    nb.cells = [first, *(nbformat.v4.new_code_cell(c) for c in cells)]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def make_project(root: Path) -> Path:
    """notebooks/{a_good, b_broken, c_good}.ipynb and notebooks/manifest.yaml; returns the manifest."""
    nbs = root / "notebooks"
    label_params = PARAMS + '\nlabel = "default"'
    write_notebook(nbs / "a_good.ipynb", [IMPORTS, GOOD.format(miou=0.61234)], label_params)
    write_notebook(nbs / "b_broken.ipynb", ["x = 1", 'raise ValueError("boom: requested failure")', "print(x)"])
    write_notebook(nbs / "c_good.ipynb", [IMPORTS, GOOD.format(miou=0.25)], label_params)
    manifest = nbs / "manifest.yaml"
    manifest.write_text(
        "- notebook: notebooks/a_good.ipynb\n"
        "  title: Good A\n"
        "- notebook: notebooks/b_broken.ipynb\n"
        "  title: Broken B\n"
        "- notebook: notebooks/c_good.ipynb\n"
        "  title: Good C\n"
        "  parameters:\n"
        "    smoke: {label: second}\n"
        "    demo: {label: demo-only}\n"
    )
    return manifest


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    root = tmp_path_factory.mktemp("suite")
    manifest = make_project(root)
    sources = {p: p.read_bytes() for p in (root / "notebooks").glob("*.ipynb")}
    result = run_suite("smoke", manifest, root / "runs", progress=False)
    return root, manifest, result, sources


def by_name(result):
    return {Path(o.notebook).stem: o for o in result.outcomes}


@pytest.mark.multiprocess
def test_failure_is_reported_and_the_batch_goes_on(batch):
    root, _, result, _ = batch
    assert not result.ok
    assert [o.notebook for o in result.failed] == ["notebooks/b_broken.ipynb"]
    broken = by_name(result)["b_broken"]
    assert broken.cell_index == 2  # source index; the executed copy has papermill's injected cell too
    assert broken.exec_count == 4
    assert broken.ename == "ValueError" and "boom: requested failure" in broken.evalue
    assert "cell 2" in broken.error and "boom: requested failure" in broken.error
    assert Path(broken.output).is_file()  # papermill writes the executed copy with the error

    later = by_name(result)["c_good"]
    assert later.ok and not later.skipped
    assert Path(later.output) == root / "runs" / "smoke" / "c_good.ipynb"
    saved = load_results(root / "runs" / "smoke" / "c_good")
    assert saved["label"] == "second"  # the manifest's per-preset parameter
    assert saved["preset"] == "smoke"
    assert (root / "runs" / "smoke" / "c_good" / "curve.png").is_file()

    summary = json.loads((root / "runs" / "smoke" / "suite.json").read_text())
    assert summary["notebooks"]["notebooks/b_broken.ipynb"]["status"] == "failed"
    assert summary["notebooks"]["notebooks/a_good.ipynb"]["skipped"] is False


@pytest.mark.multiprocess
def test_source_notebooks_are_left_untouched(batch):
    _, _, _, sources = batch
    for path, data in sources.items():
        assert path.read_bytes() == data, path


@pytest.mark.multiprocess
def test_report_shows_results_images_and_failures(batch):
    root, _, result, _ = batch
    assert result.report_path == root / "runs" / "smoke" / "report.html"
    page = result.report_path.read_text()
    assert "Good A" in page and "Good C" in page
    assert "0.612" in page and "0.912" in page  # a's miou and a flattened per_class value, rounded
    assert "per_class.road" in page
    assert page.count("data:image/png;base64,") == 2
    assert "Broken B" in page and "boom: requested failure" in page
    assert "Environment" in page and sys.version.split()[0] in page


@pytest.mark.multiprocess
def test_read_records_round_trip(batch):
    root, _, _, _ = batch
    assert read_records(root / "runs" / "smoke" / "a_good.ipynb") == {"miou": 0.612}
    assert read_records(root / "runs" / "smoke" / "b_broken.ipynb") == {}


@pytest.mark.multiprocess
def test_rerun_skips_current_force_reruns_all_and_edits_rerun(batch, tmp_path, capsys):
    src_root, _, _, _ = batch
    root = tmp_path / "copy"
    shutil.copytree(src_root, root)
    manifest, out = root / "notebooks" / "manifest.yaml", root / "runs"
    executed = {s: out / "smoke" / f"{s}.ipynb" for s in ("a_good", "b_broken", "c_good")}
    old = 1_000_000_000
    for path in executed.values():
        os.utime(path, (old, old))

    # rerun through the CLI: the good ones are current, the failed one runs again
    code = main(["--preset", "smoke", "--manifest", str(manifest), "--out", str(out), "--no-progress"])
    assert code == 1
    printed = capsys.readouterr().out
    assert "FAILED notebooks/b_broken.ipynb" in printed and "cell 2" in printed and "boom" in printed
    assert "report: " in printed
    summary = json.loads((out / "smoke" / "suite.json").read_text())["notebooks"]
    assert summary["notebooks/a_good.ipynb"]["skipped"] is True
    assert summary["notebooks/c_good.ipynb"]["skipped"] is True
    assert summary["notebooks/b_broken.ipynb"]["skipped"] is False
    assert executed["a_good"].stat().st_mtime == old and executed["c_good"].stat().st_mtime == old
    assert executed["b_broken"].stat().st_mtime > old
    page = (out / "smoke" / "report.html").read_text()
    assert "skipped (current)" in page and "0.612" in page  # skipped notebooks keep their results in the report

    # an edited notebook runs again; the others stay current
    nb = nbformat.read(root / "notebooks" / "c_good.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("y = 2"))
    nbformat.write(nb, root / "notebooks" / "c_good.ipynb")
    result = run_suite("smoke", manifest, out, progress=False)
    outcomes = by_name(result)
    assert outcomes["a_good"].skipped and not outcomes["c_good"].skipped and not outcomes["b_broken"].skipped
    assert outcomes["c_good"].ok and executed["c_good"].stat().st_mtime > old

    # --force reruns everything; --only narrows the batch
    result = run_suite("smoke", manifest, out, force=True, only="good", progress=False)
    assert [Path(o.notebook).stem for o in result.outcomes] == ["a_good", "c_good"]
    assert result.ok and not any(o.skipped for o in result.outcomes)
    assert executed["a_good"].stat().st_mtime > old


def test_missing_notebook_is_reported_not_raised(tmp_path):
    make_project(tmp_path)
    manifest = tmp_path / "notebooks" / "manifest.yaml"
    manifest.write_text("- notebook: notebooks/nope.ipynb\n")
    result = run_suite("smoke", manifest, tmp_path / "runs", progress=False)
    assert not result.ok and "not found" in result.failed[0].error
    assert "not found" in result.report_path.read_text()


def test_manifest_errors(tmp_path):
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text("- notebook: a.ipynb\n  parameters: {smok: {x: 1}}\n")
    with pytest.raises(ValueError, match="valid presets"):
        load_manifest(manifest)
    manifest.write_text("- notebook: a.ipynb\n  parameters: {smoke: {results_dir: /tmp}}\n")
    with pytest.raises(ValueError, match="set by the suite"):
        load_manifest(manifest)
    assert main(["--manifest", str(tmp_path / "missing.yaml"), "--out", str(tmp_path), "--no-progress"]) == 2


@pytest.mark.multiprocess
def test_set_overrides_reach_every_notebook_and_win_over_the_manifest(tmp_path, capsys):
    manifest = make_project(tmp_path)
    out = tmp_path / "runs"
    assert main(["--manifest", str(manifest), "--out", str(out), "--no-progress", "--only", "c_good",
                 "--set", "label=from-cli"]) == 0
    assert load_results(out / "smoke" / "c_good")["label"] == "from-cli"  # the manifest says "second"
    assert parse_overrides(["steps=200", "seeds=[0, 1]", "name=x"]) == {"steps": 200, "seeds": [0, 1], "name": "x"}
    for bad in (["steps"], ["=3"], ["a b=1"], ["x=[1"]):
        with pytest.raises(ValueError, match="--set"):
            parse_overrides(bad)
    with pytest.raises(ValueError, match="cannot be overridden"):
        run_suite("smoke", manifest, out, progress=False, overrides={"preset": "demo"})


@pytest.mark.multiprocess
def test_a_hung_cell_fails_its_notebook_named_with_the_cell_and_the_batch_goes_on(tmp_path, capsys):
    manifest = make_project(tmp_path)
    write_notebook(tmp_path / "notebooks" / "hangs.ipynb", ["x = 1", "import time\ntime.sleep(600)", "print(x)"])
    manifest.write_text("- notebook: notebooks/hangs.ipynb\n- notebook: notebooks/a_good.ipynb\n")
    assert set(CELL_TIMEOUTS) == set(PRESETS)
    assert main(["--manifest", str(manifest), "--out", str(tmp_path / "runs"), "--no-progress",
                 "--cell-timeout", "3"]) == 1
    printed = capsys.readouterr().out
    assert "FAILED notebooks/hangs.ipynb" in printed and "cell 2: still running after the cell timeout of 3 s" in printed
    assert "1 ok" in printed  # a_good ran after it
    summary = json.loads((tmp_path / "runs" / "smoke" / "suite.json").read_text())
    assert summary["notebooks"]["notebooks/hangs.ipynb"]["cell_index"] == 2
    assert summary["notebooks"]["notebooks/a_good.ipynb"]["status"] == "ok"


@pytest.mark.multiprocess
def test_unknown_parameter_names_are_errors_that_list_the_notebooks_parameters(tmp_path, capsys):
    manifest = make_project(tmp_path)
    out = tmp_path / "runs"
    assert main(["--manifest", str(manifest), "--out", str(out), "--no-progress", "--only", "c_good",
                 "--set", "lable=typo"]) == 2
    error = capsys.readouterr().err
    assert "--set lable" in error and "label, " not in error and "preset" not in error and "label" in error
    assert not (out / "smoke" / "c_good").exists()  # nothing ran
    manifest.write_text("- notebook: notebooks/c_good.ipynb\n  parameters: {smoke: {lable: second}}\n")
    with pytest.raises(ValueError, match="c_good.ipynb the parameter.s. lable, which it does not have; its "
                                         "parameters: preset, results_dir, label"):
        run_suite("smoke", manifest, out, progress=False)
    # a name that some notebooks of the batch declare reaches those, and only those
    manifest = make_project(tmp_path)
    result = run_suite("smoke", manifest, out, progress=False, overrides={"label": "everywhere"})
    assert load_results(out / "smoke" / "a_good")["label"] == "everywhere"
    assert "label" not in by_name(result)["b_broken"].parameters


def test_module_entry_point():
    done = subprocess.run([sys.executable, "-m", "contrastseg.suite", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--preset" in done.stdout


def test_save_results_rounds_and_sorts(tmp_path):
    path = save_results(
        tmp_path / "r",
        {"b": 1.23456, "a": {"x": [0.11111, 2], "y": np.float32(0.98765)}, "n": np.arange(3), "bad": float("nan")},
    )
    assert path == tmp_path / "r" / "results.json"
    text = path.read_text()
    assert list(json.loads(text)) == ["a", "b", "bad", "n"]
    expected = {"a": {"x": [0.111, 2], "y": 0.988}, "b": 1.235, "bad": "nan", "n": [0, 1, 2]}
    assert load_results(tmp_path / "r") == expected
    assert save_results("", {"a": 1}) is None
    assert load_results(tmp_path / "nothing") == {}


def test_save_figure_and_default_results_dir(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1, 1))
    fig.subplots().plot([0, 1])
    path = save_figure(fig, tmp_path / "r", "fig")
    assert path == tmp_path / "r" / "fig.png" and path.read_bytes()[:4] == b"\x89PNG"
    assert save_figure(fig, "", "fig") is None

    monkeypatch.setenv("CONTRASTSEG_RUNS", str(tmp_path / "store"))
    assert results_dir_for("00_quickstart.ipynb") == tmp_path / "store" / "notebooks" / "00_quickstart"
    monkeypatch.delenv("CONTRASTSEG_RUNS")
    # in a checkout, the checkout's runs folder, wherever the kernel runs (a notebook's own folder included)
    assert results_dir_for("00_quickstart") == paths.REPOSITORY / "runs" / "notebooks" / "00_quickstart"
    monkeypatch.setattr(paths, "REPOSITORY", tmp_path / "not-a-checkout")
    with pytest.warns(UserWarning, match="writes its runs to"):
        assert results_dir_for("00_quickstart") == Path("runs") / "notebooks" / "00_quickstart"


def test_report_tables_from_outcome_dicts(tmp_path):
    save_results(tmp_path / "nb", {"table": {"ce": {"miou": 0.5}, "pixel_contrast": {"miou": 0.61234, "biou": 0.3}}})
    outcome = {
        "notebook": "notebooks/t.ipynb",
        "title": "Table 2",
        "status": "ok",
        "skipped": False,
        "seconds": 1.0,
        "results_dir": str(tmp_path / "nb"),
    }
    page = write_report(tmp_path, [outcome], title="T").read_text()
    assert "<th>pixel_contrast</th>" in page and "<th>biou</th>" in page and "0.612" in page


def test_report_puts_the_papers_numbers_beside_ours(tmp_path):
    """By the notebook's path (notebooks/<paper>/table_<table>.ipynb), or from the ``reported`` key of its results."""
    save_results(tmp_path / "objectives", {"table": [{"row": "CE", "miou_mean": 0.273, "miou_std": 0.01}]})
    own = {"row": "ours", "setting": "Table 1 of a paper", "metric": "mIoU", "value": 50.0, "source": "the paper",
           "label": "A", "verified": True}
    save_results(tmp_path / "methods", {"table": [{"row": "ours", "miou_mean": 0.5, "miou_std": 0.0}],
                                        "reported": [own]})
    outcomes = [{"notebook": "notebooks/pixel_contrast/table_objectives.ipynb", "title": "Objectives", "status": "ok",
                 "results_dir": str(tmp_path / "objectives")},
                {"notebook": "notebooks/compare/methods.ipynb", "title": "Methods", "status": "ok",
                 "results_dir": str(tmp_path / "methods")},
                {"notebook": "notebooks/00_quickstart.ipynb", "title": "Quickstart", "status": "ok"}]
    page = write_report(tmp_path, outcomes, title="T").read_text()
    section = page[page.index('<h2 id="reported">'):page.index('<h2 id="environment">')]

    expected = reported_numbers("pixel_contrast", "objectives")
    assert len(expected) and not expected["verified"].any()
    for value, source in zip(expected["value"], expected["source"]):  # the papers' percentages, as fractions
        assert f'<td class="num">{value / 100:.3f}</td>' in section and source in section
    assert section.count('class="badge unverified">unverified') == len(expected)
    assert "0.273 ± 0.010" in section and "n/a" in section  # our CE row; "+ both memories" is not in our table
    assert 'class="badge ok">verified' in section and "0.500 ± 0.000" in section and "Table 1 of a paper" in section
    assert page.count("Table 1 of a paper") == 1  # not repeated among the notebook's results
    assert "Quickstart" not in section
    assert "http" not in page  # self-contained: no external stylesheet, script or image


def test_report_shows_no_spread_for_one_seed(tmp_path):
    """One seed has no standard deviation: "0.273 (n=1)" beside the papers' numbers, never a fake "± 0.000"."""
    one_seed = summarize(pd.DataFrame({"row": ["CE"], "seed": [0], "miou": [0.2731]}), ("miou",))
    save_results(tmp_path / "objectives", {"table": one_seed.reset_index().to_dict("records")})
    outcome = {"notebook": "notebooks/pixel_contrast/table_objectives.ipynb", "title": "Objectives", "status": "ok",
               "results_dir": str(tmp_path / "objectives")}
    page = write_report(tmp_path, [outcome], title="T").read_text()
    section = page[page.index('<h2 id="reported">'):page.index('<h2 id="environment">')]
    assert "0.273 (n=1)" in section and "±" not in section.replace("&plusmn;", "")


def test_report_environment_lists_versions_device_commit_and_date(tmp_path):
    env = environment()
    installed = [name for name in ENVIRONMENT_PACKAGES if name in env]
    assert {"torch", "numpy", "seaborn", "matplotlib", "papermill", "nbval"} <= set(installed)
    assert env["numpy"] == np.__version__ and torch.__version__.startswith(env["torch"])  # torch adds "+cu130"
    if torch.cuda.is_available():
        assert f"x {torch.cuda.get_device_name(0)}" in env["device"]
    else:
        assert env["device"].endswith(f", {os.cpu_count()} logical CPUs")
    assert env["git commit"] and env["date"][:4].isdigit()
    page = write_report(tmp_path, [], title="T").read_text()
    environment_table = page[page.index('<h2 id="environment">'):]
    for key in ("python", *installed, "device", "git commit", "date"):
        assert f"<th>{key}</th>" in environment_table
    assert env["device"] in environment_table


REPO = Path(__file__).resolve().parents[1]
REAL_MANIFEST = REPO / "notebooks" / "manifest.yaml"
# The real notebooks the suite executes here; nbval executes every notebook (and the suite at smoke injects no
# parameters of its own beyond preset and results_dir), so running all of them a second time would only repeat work.
SUITE_SAMPLE = ("00_quickstart", "methods")


def test_every_manifest_entry_is_a_notebook_that_the_suite_can_drive():
    """Each entry's notebook exists, takes ``preset`` and ``results_dir`` and every parameter the manifest gives
    it (a misspelt one would be injected and ignored), and saves its results."""
    import papermill

    entries = load_manifest(REAL_MANIFEST)
    on_disk = {p.resolve() for pattern in ("*.ipynb", "*/*.ipynb") for p in (REPO / "notebooks").glob(pattern)}
    assert {e.path for e in entries} == on_disk, "every committed notebook is in the manifest, and only those"
    for entry in entries:
        accepted = set(papermill.inspect_notebook(str(entry.path)))
        assert {"preset", "results_dir"} <= accepted, entry.notebook
        for preset, values in entry.parameters.items():
            unknown = set(values) - {"settings"} - accepted
            assert not unknown, f"{entry.notebook}: {preset} parameters {sorted(unknown)} are not notebook parameters"
        assert "save_results(results_dir" in entry.path.read_text(encoding="utf-8"), entry.notebook


@pytest.mark.multiprocess
def test_real_notebooks_run_in_the_suite_at_smoke(tmp_path):
    """A sample of the real notebooks runs through the suite at smoke and writes its results and the report."""
    import yaml

    raw = yaml.safe_load(REAL_MANIFEST.read_text(encoding="utf-8"))
    sample = [dict(e, notebook=str(REPO / e["notebook"])) for e in raw if Path(e["notebook"]).stem in SUITE_SAMPLE]
    assert len(sample) == len(SUITE_SAMPLE)
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(yaml.safe_dump(sample), encoding="utf-8")
    result = run_suite("smoke", manifest_path=manifest, out_root=tmp_path / "out", progress=False)
    assert result.ok, format_failures(result)
    for outcome in result.outcomes:
        results = json.loads((Path(outcome.results_dir) / "results.json").read_text())
        assert results, f"{outcome.notebook} recorded no results"
    assert result.report_path.is_file()
