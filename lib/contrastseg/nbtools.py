"""Keep committed notebooks reviewable: execute them at their default (smoke) parameters, strip volatile parts, and
write each notebook's text pair.

A committed notebook carries the outputs of the smoke preset, which nbval compares (only the cells marked
``NBVAL_CHECK_OUTPUT``) on every test run. Refresh them after changing a notebook::

    python -m contrastseg.nbtools notebooks/00_quickstart.ipynb      # or: make notebooks

The notebooks of one call share one fresh temporary run store, as in CI, so their outputs never depend on runs
cached before, and a run that two notebooks use is trained once. Then the
tool removes papermill's and the kernel's metadata (timings, timestamps, widget state), stderr streams (progress
bars), widget views (a fresh model id each run, and nothing to show once the widget state is gone) and empty cell
tags, so a rerun that computes the same numbers changes nothing in git.

**Text pairs.** Every notebook of ``notebooks/`` has a jupytext ``py:percent`` pair beside it (``fig_tsne.ipynb``
and ``fig_tsne.py``): the cells as a plain Python script, markdown as comments, the ``parameters`` tag on its cell
marker, no outputs and no notebook metadata. Reviewers read a notebook's change in the pair's diff. The pairing is
``notebooks/jupytext.toml``, which JupyterLab's jupytext extension reads too, so saving a notebook in JupyterLab
rewrites its pair (and opening the pair opens the notebook), with no jupytext metadata in the ``.ipynb``. The
notebook is the source of a pair: a refresh rewrites the pairs of the notebooks it executed, and ::

    python -m contrastseg.nbtools --pairs-only notebooks/00_quickstart.ipynb   # or: make sync (every notebook)

rewrites pairs without executing anything. A pair edited by hand goes back into its notebook with
``jupytext --sync NOTEBOOK`` (the newer file wins, the notebook keeps its outputs). ``pair_problems`` says whether a
pair holds the same cells (type, source, tags) as its notebook; a test checks it for every notebook.
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

VOLATILE_NOTEBOOK_METADATA = ("papermill", "widgets", "jupytext")  # jupytext: the pairing is in jupytext.toml
VOLATILE_CELL_METADATA = ("papermill", "execution")
WIDGET_VIEW_MIME = "application/vnd.jupyter.widget-view+json"
PAIRS_COMMAND = "python -m contrastseg.nbtools --pairs-only"
"""The command that writes a notebook's text pairs from the notebook (``make sync`` runs it on every notebook)."""


def strip_volatile(notebook) -> None:
    """Remove timings, widget state, widget views, stderr outputs and empty tags from a notebook (an nbformat node),
    in place."""
    for key in VOLATILE_NOTEBOOK_METADATA:
        notebook.metadata.pop(key, None)
    for cell in notebook.cells:
        for key in VOLATILE_CELL_METADATA:
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            cell.outputs = [out for out in cell.outputs if not (out.output_type == "stream" and out.name == "stderr")
                            and WIDGET_VIEW_MIME not in out.get("data", {})]
    drop_empty_tags(notebook)


def drop_empty_tags(notebook) -> None:
    """Remove the empty tag lists of a notebook's cells, in place: an empty list is no tag, and would put
    ``tags=[]`` on the cell's marker in a text pair."""
    for cell in notebook.cells:
        if cell.metadata.get("tags") == []:
            del cell.metadata["tags"]


def refresh(path: str | os.PathLike) -> None:
    """Execute ``path`` in place with its own parameters (in the current run store), strip volatile parts, and
    rewrite its text pairs."""
    nbformat = import_notebooks_package("nbformat", "refreshing a notebook")
    papermill = import_notebooks_package("papermill", "refreshing a notebook")
    path = Path(path)
    papermill.execute_notebook(str(path), str(path), kernel_name="python3", progress_bar=False, cwd=str(path.parent))
    notebook = nbformat.read(path, as_version=4)
    strip_volatile(notebook)
    nbformat.write(notebook, path)
    write_pairs(path)


# --------------------------------------------------------------------------------------------------- text pairs


def text_pairs(notebook_path: str | os.PathLike) -> list[tuple[Path, dict]]:
    """The text files that the jupytext configuration of the notebook's folder (or a parent's) pairs with it, each
    with its jupytext format (``{"extension": ".py", "format_name": "percent"}``); empty when no configuration
    pairs the notebook."""
    config = _jupytext_config(Path(notebook_path))
    path = os.fspath(Path(notebook_path).resolve())
    formats = config.default_formats(path) if config is not None else None
    if not formats:
        return []
    paired_paths = import_notebooks_package("jupytext.paired_paths", "pairing notebooks").paired_paths
    return [(Path(pair), fmt) for pair, fmt in paired_paths(path, "ipynb", formats) if fmt["extension"] != ".ipynb"]


def write_pairs(notebook_path: str | os.PathLike) -> list[Path]:
    """Write the notebook's text pairs (``text_pairs``) from its cells, and return their paths.

    Raises:
        ValueError: when no jupytext configuration pairs the notebook.
    """
    jupytext = import_notebooks_package("jupytext", "writing a notebook's text pair")
    nbformat = import_notebooks_package("nbformat", "writing a notebook's text pair")
    notebook_path = Path(notebook_path)
    pairs = text_pairs(notebook_path)
    if not pairs:
        raise ValueError(f"{notebook_path}: no jupytext configuration pairs it with a text file (jupytext.toml in "
                         f"its folder or a parent's; notebooks/jupytext.toml pairs every notebook of notebooks/)")
    notebook = nbformat.read(notebook_path, as_version=4)
    drop_empty_tags(notebook)
    config = _jupytext_config(notebook_path)
    for pair, fmt in pairs:
        jupytext.write(notebook, pair, fmt=fmt, config=config)
    return [pair for pair, _ in pairs]


def pair_problems(notebook_path: str | os.PathLike) -> list[str]:
    """What keeps the notebook's text pairs from matching it, one line each: a missing pair, or the first cell whose
    type, source or tags differ; empty when every pair holds the notebook's cells (or no configuration pairs it)."""
    jupytext = import_notebooks_package("jupytext", "checking a notebook's text pair")
    nbformat = import_notebooks_package("nbformat", "checking a notebook's text pair")
    notebook_path = Path(notebook_path)
    fix = f"`{PAIRS_COMMAND} {notebook_path}` (or `make sync`) writes it from the notebook"
    expected = [_cell_view(cell) for cell in nbformat.read(notebook_path, as_version=4).cells]
    problems = []
    for pair, fmt in text_pairs(notebook_path):
        if not pair.is_file():
            problems.append(f"{notebook_path} has no text pair {pair}: {fix}")
            continue
        found = [_cell_view(cell) for cell in jupytext.read(pair, fmt=fmt).cells]
        differing = [index for index, (want, got) in enumerate(zip(expected, found)) if want != got]
        if differing:
            index = differing[0]
            what = [name for name, want, got in zip(("type", "source", "tags"), expected[index], found[index])
                    if want != got]
            problems.append(f"{pair} differs from {notebook_path} in cell {index} ({', '.join(what)}): {fix}, or "
                            f"`jupytext --sync {notebook_path}` takes an edit of the pair into the notebook")
        elif len(found) != len(expected):
            problems.append(f"{pair} has {len(found)} cells, {notebook_path} {len(expected)}: {fix}")
    return problems


def _cell_view(cell) -> tuple[str, str, tuple[str, ...]]:
    """What a text pair keeps of a cell: its type, its source (without trailing newlines, which a cell of a
    ``py:percent`` file cannot end with) and its tags."""
    return cell.cell_type, cell.source.rstrip("\n"), tuple(cell.metadata.get("tags", ()))


def _jupytext_config(notebook_path: Path):
    config_module = import_notebooks_package("jupytext.config", "pairing notebooks")
    return config_module.load_jupytext_config(os.fspath(notebook_path.resolve()))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--pairs-only", action="store_true",
                        help="write the notebooks' text pairs from the notebooks, without executing them")
    args = parser.parse_args(argv)
    if args.pairs_only:
        for path in args.notebooks:
            for pair in write_pairs(path):
                print(f"wrote {pair}", file=sys.stderr)
        return 0
    with tempfile.TemporaryDirectory(prefix="contrastseg-refresh-") as store, environ(**{RUNS_ENV: store}):
        for path in args.notebooks:
            print(f"refreshing {path}", file=sys.stderr)
            refresh(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
