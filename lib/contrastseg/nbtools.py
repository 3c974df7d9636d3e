"""Keep committed notebooks reviewable: execute them at their default (smoke) parameters and strip volatile parts.

A committed notebook carries the outputs of the smoke preset, which nbval compares (only the cells marked
``NBVAL_CHECK_OUTPUT``) on every test run. Refresh them after changing a notebook::

    python -m contrastseg.nbtools notebooks/00_quickstart.ipynb      # or: make notebooks

The notebooks of one call share one fresh temporary run store, as in CI, so their outputs never depend on runs
cached before, and a run that two notebooks use is trained once. Then the
tool removes papermill's and the kernel's metadata (timings, timestamps, widget state), stderr streams (progress
bars) and widget views (a fresh model id each run, and nothing to show once the widget state is gone), so a rerun
that computes the same numbers changes nothing in git.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from contrastseg.extras import import_notebooks_package
from contrastseg.paths import RUNS_ENV, environ

VOLATILE_NOTEBOOK_METADATA = ("papermill", "widgets")
VOLATILE_CELL_METADATA = ("papermill", "execution")
WIDGET_VIEW_MIME = "application/vnd.jupyter.widget-view+json"


def strip_volatile(notebook) -> None:
    """Remove timings, widget state, widget views and stderr outputs from a notebook (an nbformat node), in place."""
    for key in VOLATILE_NOTEBOOK_METADATA:
        notebook.metadata.pop(key, None)
    for cell in notebook.cells:
        for key in VOLATILE_CELL_METADATA:
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            cell.outputs = [out for out in cell.outputs if not (out.output_type == "stream" and out.name == "stderr")
                            and WIDGET_VIEW_MIME not in out.get("data", {})]


def refresh(path: str | os.PathLike) -> None:
    """Execute ``path`` in place with its own parameters (in the current run store), then strip volatile parts."""
    nbformat = import_notebooks_package("nbformat", "refreshing a notebook")
    papermill = import_notebooks_package("papermill", "refreshing a notebook")
    path = Path(path)
    papermill.execute_notebook(str(path), str(path), kernel_name="python3", progress_bar=False, cwd=str(path.parent))
    notebook = nbformat.read(path, as_version=4)
    strip_volatile(notebook)
    nbformat.write(notebook, path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="contrastseg-refresh-") as store, environ(**{RUNS_ENV: store}):
        for path in args.notebooks:
            print(f"refreshing {path}", file=sys.stderr)
            refresh(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
