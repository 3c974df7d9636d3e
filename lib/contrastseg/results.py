"""Named results of a notebook: recorded in its outputs, saved as JSON and PNG files, read back.

A notebook ends with a results cell::

    record("miou", miou)                          # a display output that papermill and nbval both keep
    save_results(results_dir, {"miou": miou, "per_class": per_class})
    save_figure(fig, results_dir, "predictions")

``results_dir`` is a notebook parameter. The suite (`contrastseg.suite`) injects its own folder; an empty string
means "write nothing", which keeps a plain run in JupyterLab free of side effects. A notebook that wants files when
run by hand can use ``results_dir or results_dir_for("00_quickstart")``.

Values are made JSON-able (NumPy and torch scalars and arrays become numbers and lists, tuples become lists) and
floats are rounded to ``ndigits`` decimals, so that outputs compared by nbval do not change in the last float bits
(CPU runs differ by about 1e-6 between thread counts or CPUs; 3 decimals absorb that). Non-finite floats become the
strings ``"nan"``, ``"inf"`` and ``"-inf"``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from contrastseg.extras import import_notebooks_package
from contrastseg.paths import runs_root

RECORD_MIME = "application/vnd.contrastseg.record+json"
RESULTS_FILE = "results.json"


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


def save_figure(fig, results_dir: str | os.PathLike, name: str, dpi: int = 80) -> Path | None:
    """Save a matplotlib figure as ``results_dir/<name>.png`` and return its path (None when results_dir is empty).

    A modest ``dpi`` and a tight bounding box keep the files, and the report that embeds them, small.
    """
    if not results_dir:
        return None
    folder = Path(results_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (name if name.endswith(".png") else f"{name}.png")
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def show_figure(fig, results_dir: str | os.PathLike, name: str, dpi: int = 72) -> None:
    """Save a figure like ``save_figure``, display it once as a PNG of the same ``dpi``, and close it.

    Notebooks end their figure cells with this call, so the committed outputs hold one small PNG per figure and no
    file path.
    """
    import io

    import matplotlib.pyplot as plt

    ipython_display = import_notebooks_package("IPython.display", "show_figure")

    save_figure(fig, results_dir, name, dpi=dpi)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    ipython_display.display(ipython_display.Image(data=buffer.getvalue()))


def results_dir_for(notebook_name: str) -> Path:
    """Default results folder for a notebook run by hand: ``<runs root>/notebooks/<stem>``.

    The runs root is ``$CONTRASTSEG_RUNS`` if set, else ``runs`` relative to the current folder.
    """
    return runs_root() / "notebooks" / Path(notebook_name).stem
