"""Notebooks as code for review: every notebook of ``notebooks/`` has a jupytext ``py:percent`` pair that holds the
same cells (``contrastseg.nbtools``), pytest does not collect the pairs, and a refresh rewrites them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from contrastseg.nbtools import PAIRS_COMMAND, pair_problems, refresh, text_pairs, write_pairs

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").rglob("*.ipynb"))
CONFIG = ROOT / "notebooks" / "jupytext.toml"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda path: str(path.relative_to(ROOT / "notebooks")))
def test_every_notebook_has_a_text_pair_with_its_cells(notebook):
    assert [(pair.name, fmt["format_name"]) for pair, fmt in text_pairs(notebook)] == \
        [(notebook.with_suffix(".py").name, "percent")]
    assert pair_problems(notebook) == []


def small_notebook(folder: Path) -> Path:
    """A notebook with a markdown cell, a tagged parameters cell and a code cell with a magic, in a folder that
    has the repository's jupytext configuration."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(CONFIG, folder / CONFIG.name)
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    parameters = nbformat.v4.new_code_cell('preset = "smoke"\nresults_dir = ""')
    parameters.metadata["tags"] = ["parameters"]
    notebook.cells = [nbformat.v4.new_markdown_cell("# Title\n\nSome *text*."), parameters,
                      nbformat.v4.new_code_cell("%matplotlib inline\nprint(preset)")]
    path = folder / "small.ipynb"
    nbformat.write(notebook, path)
    return path


def test_a_missing_or_stale_pair_is_named_with_the_command_that_writes_it(tmp_path):
    notebook = small_notebook(tmp_path / "notebooks")
    (problem,) = pair_problems(notebook)
    assert f"has no text pair {notebook.with_suffix('.py')}" in problem and f"{PAIRS_COMMAND} {notebook}" in problem

    assert write_pairs(notebook) == [notebook.with_suffix(".py")]
    assert pair_problems(notebook) == []
    text = notebook.with_suffix(".py").read_text()
    assert '# %% tags=["parameters"]' in text and "# # Title" in text and "outputs" not in text
    assert "jupytext" not in nbformat.read(notebook, as_version=4).metadata  # the pairing lives in jupytext.toml

    edited = nbformat.read(notebook, as_version=4)
    edited.cells[2].source = "print(preset, results_dir)"
    nbformat.write(edited, notebook)
    (problem,) = pair_problems(notebook)
    assert "differs from" in problem and "in cell 2 (source)" in problem and PAIRS_COMMAND in problem

    edited.cells[2].source = "%matplotlib inline\nprint(preset)"
    edited.cells[1].metadata["tags"] = []
    nbformat.write(edited, notebook)
    (problem,) = pair_problems(notebook)
    assert "in cell 1 (tags)" in problem


def test_a_notebook_outside_the_configured_folders_has_no_pair(tmp_path):
    notebook = small_notebook(tmp_path / "elsewhere")
    (tmp_path / "elsewhere" / CONFIG.name).unlink()
    assert text_pairs(notebook) == [] and pair_problems(notebook) == []
    with pytest.raises(ValueError, match="no jupytext configuration pairs it"):
        write_pairs(notebook)


def test_pytest_collects_the_notebooks_and_not_their_pairs():
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "notebooks"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    collected = [line for line in done.stdout.splitlines() if "::" in line]
    assert collected and all(line.split("::")[0].endswith(".ipynb") for line in collected)
    assert {line.split("::")[0] for line in collected} == {path.relative_to(ROOT).as_posix() for path in NOTEBOOKS}


@pytest.mark.multiprocess
def test_a_refresh_rewrites_the_pair(tmp_path):
    notebook = small_notebook(tmp_path / "notebooks")
    refresh(notebook)
    assert pair_problems(notebook) == []
    assert "print(preset)" in notebook.with_suffix(".py").read_text()
