"""Named results of a notebook: recorded in its outputs, saved as JSON and figure files, read back.

A notebook ends with a results cell::

    record("miou", miou)                          # a display output that papermill and nbval both keep
    save_results(results_dir, {"miou": miou, "per_class": per_class})
    save_figure(fig, results_dir, "predictions")   # predictions.png, and predictions.pdf for a paper

``results_dir`` is a notebook parameter. The suite (`contrastseg.suite`) injects its own folder; an empty string
means "write nothing", which keeps a plain run in JupyterLab free of side effects. A notebook that wants files when
run by hand can use ``results_dir or results_dir_for("00_quickstart")``.

Values are made JSON-able (NumPy and torch scalars and arrays become numbers and lists, tuples become lists) and
floats are rounded to ``ndigits`` decimals, so that outputs compared by nbval do not change in the last float bits
(CPU runs differ by about 1e-6 between thread counts or CPUs; 3 decimals absorb that). Non-finite floats become the
strings ``"nan"``, ``"inf"`` and ``"-inf"``.

Figures are saved as a PNG at a modest resolution, which the report embeds, and in vector forms for papers
(``VECTOR_FORMATS``: PDF by default, SVG on request): text and lines stay sharp at any size, while scatters of many
points (``contrastseg.viz.plot_embedding`` above ``RASTERIZED_POINTS``) are embedded as an image of
``VECTOR_RASTER_DPI``, so that a t-SNE map of 100,000 points stays a file of under a MB. The vector files
carry no creation date and SVG element ids are seeded by the figure's name, so saving the same figure again writes
the same bytes.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

from contrastseg.extras import import_notebooks_package
from contrastseg.paths import runs_root

RECORD_MIME = "application/vnd.contrastseg.record+json"
RESULTS_FILE = "results.json"
VECTOR_FORMATS = ("pdf", "svg")
"""The vector forms ``save_figure`` can write beside the PNG."""
DEFAULT_VECTOR_FORMATS = ("pdf",)
"""What ``save_figure`` writes beside the PNG unless told otherwise: PDF, which LaTeX includes as it is."""
VECTOR_RASTER_DPI = 300
"""Resolution of the parts of a vector figure drawn as an image (``rasterized`` artists, such as large scatters)."""
VECTOR_METADATA = {"pdf": {"CreationDate": None}, "svg": {"Date": None}}  # no date: the same figure, the same bytes


def jsonable(value: Any, ndigits: int | None = 3) -> Any:
    """Return ``value`` as plain JSON types, with floats rounded to ``ndigits`` decimals (None: not rounded).

    Raises:
        TypeError: for a value with no JSON form (an arbitrary object).
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
        value = float(value)
        return round(value, ndigits) if ndigits is not None else value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v, ndigits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v, ndigits) for v in value]
    if hasattr(value, "to_dict") and callable(value.to_dict):  # pandas Series / DataFrame
        return jsonable(value.to_dict(), ndigits)
    if hasattr(value, "tolist") and callable(value.tolist):  # NumPy / torch scalars and arrays
        return jsonable(value.tolist(), ndigits)
    raise TypeError(f"cannot record a value of type {type(value).__name__}: {value!r}")


def record(name: str, value: Any, ndigits: int | None = 3) -> None:
    """Display ``value`` under ``name`` as a custom-mime output, with a readable text form beside it.

    `read_records` reads it back from the executed notebook; nbval compares it like any other output.
    """
    value = jsonable(value, ndigits)
    text = f"{name} = {json.dumps(value)}"
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        get_ipython = None
    if get_ipython is None or get_ipython() is None:  # a plain Python process: just print it
        print(text)
        return
    display({RECORD_MIME: {"name": str(name), "value": value}, "text/plain": text}, raw=True)


def read_records(notebook_path: str | os.PathLike) -> dict[str, Any]:
    """Return ``{name: value}`` for every `record` output of an executed notebook (a later record wins)."""
    nbformat = import_notebooks_package("nbformat", "read_records")
    nb = nbformat.read(os.fspath(notebook_path), as_version=4)
    records: dict[str, Any] = {}
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if RECORD_MIME in data:
                item = data[RECORD_MIME]
                if isinstance(item, str):  # some writers store JSON mimes as text
                    item = json.loads(item)
                records[item["name"]] = item["value"]
    return records


def save_results(results_dir: str | os.PathLike, results: dict, ndigits: int | None = 3) -> Path | None:
    """Write ``results`` to ``results_dir/results.json`` (sorted keys, rounded floats) and return its path.

    The folder is created. An empty ``results_dir`` writes nothing and returns None.
    """
    if not results_dir:
        return None
    folder = Path(results_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / RESULTS_FILE
    text = json.dumps(jsonable(dict(results), ndigits), indent=2, sort_keys=True)
    path.write_text(text + "\n", encoding="utf-8")
    return path


def load_results(results_dir: str | os.PathLike) -> dict:
    """Return the contents of ``results_dir/results.json``, or an empty dict when there is none."""
    path = Path(results_dir) / RESULTS_FILE
    if not results_dir or not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def save_figure(fig, results_dir: str | os.PathLike, name: str, dpi: int = 80,
                vector_formats: Sequence[str] = DEFAULT_VECTOR_FORMATS) -> Path | None:
    """Save a matplotlib figure as ``results_dir/<name>.png`` and, beside it, as ``<name>.<format>`` for each of
    ``vector_formats`` (``VECTOR_FORMATS``; ``()`` for none); return the PNG's path (None when results_dir is
    empty, which writes nothing).

    A modest ``dpi`` and a tight bounding box keep the PNG files, and the report that embeds them, small.

    Raises:
        ValueError: for a format that is not one of ``VECTOR_FORMATS``, before anything is written.
    """
    unknown = [fmt for fmt in vector_formats if fmt not in VECTOR_FORMATS]
    if unknown:
        raise ValueError(f"unknown vector format(s) {', '.join(map(repr, unknown))}; valid formats: "
                         f"{', '.join(VECTOR_FORMATS)}")
    if not results_dir:
        return None
    import matplotlib

    folder = Path(results_dir)
    folder.mkdir(parents=True, exist_ok=True)
    stem = name.removesuffix(".png")
    path = folder / f"{stem}.png"
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    for fmt in vector_formats:
        with matplotlib.rc_context({"svg.hashsalt": stem}):
            fig.savefig(folder / f"{stem}.{fmt}", format=fmt, dpi=VECTOR_RASTER_DPI, bbox_inches="tight",
                        metadata=VECTOR_METADATA[fmt])
    return path


def show_figure(fig, results_dir: str | os.PathLike, name: str, dpi: int = 72,
                vector_formats: Sequence[str] = DEFAULT_VECTOR_FORMATS) -> None:
    """Save a figure like ``save_figure`` (with its vector forms), display it once as a PNG of the same ``dpi``, and
    close it.

    Notebooks end their figure cells with this call, so the committed outputs hold one small PNG per figure and no
    file path.
    """
    import io

    import matplotlib.pyplot as plt

    ipython_display = import_notebooks_package("IPython.display", "show_figure")

    save_figure(fig, results_dir, name, dpi=dpi, vector_formats=vector_formats)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    ipython_display.display(ipython_display.Image(data=buffer.getvalue()))


def results_dir_for(notebook_name: str) -> Path:
    """Default results folder for a notebook run by hand: ``<runs root>/notebooks/<stem>``.

    The runs root is ``$CONTRASTSEG_RUNS`` if set, else ``runs`` relative to the current folder.
    """
    return runs_root() / "notebooks" / Path(notebook_name).stem
