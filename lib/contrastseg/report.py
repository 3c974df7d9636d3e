"""One self-contained HTML page for a suite batch: every notebook's status, results table and figures, the papers'
numbers beside ours, and the environment (package versions, device, git commit, date).

The page needs no server and no other file: figures are embedded as base64 PNGs, the CSS is inline. It is written by
`contrastseg.suite` after each batch, to ``<out_root>/<preset>/report.html``.

Results tables: nested dicts are flattened to dotted names (``per_class.road``); a top-level dict of flat dicts
(``{"pixel_contrast": {"miou": .., "biou": ..}, "ce": {...}}``) and a list of flat dicts are shown as 2-D tables.

Papers' numbers: a notebook at ``notebooks/<paper>/table_<table>.ipynb`` (or ``fig_<table>.ipynb``) gets
``contrastseg.tables.reported_numbers(paper, table)``, the numbers its own cells show; a notebook elsewhere (one
that compares across papers) saves its records under the ``reported`` key of its results instead. Each is shown with
its source and verification status, beside our mean +- std of the same row where its ``table`` results have one
(``mean (n=1)`` for one seed: no spread is shown where there is none).

Idle methods: a row of a notebook's ``table`` results (``contrastseg.tables.summarize`` records) whose
``method_active`` share is below ``IDLE_SHARE`` (its method term was zero on more than half of its steps: no anchor,
no teacher region, ...) gets a warning in its notebook's section and in the contents, naming the row and the share.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import html
import json
import os
import platform
import re
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Mapping

from contrastseg.provenance import UNKNOWN_COMMIT, git_commit, package_versions

from .results import RESULTS_FILE, load_results

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto; max-width: 1100px;
       padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; }
h2 { font-size: 1.25rem; margin: 2.2rem 0 .4rem; border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
h3 { font-size: 1rem; margin: 1rem 0 .3rem; color: #444; }
.meta, .path { color: #666; font-size: .9rem; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: .85rem; }
pre { background: #f6f6f6; padding: .6rem; overflow-x: auto; border-radius: 4px; }
table { border-collapse: collapse; margin: .4rem 0 1rem; font-size: .9rem; }
th, td { border: 1px solid #ddd; padding: .25rem .6rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.badge { display: inline-block; padding: .05rem .5rem; border-radius: .8rem; font-size: .8rem; font-weight: 600;
         color: #fff; vertical-align: middle; }
.ok { background: #2e7d32; } .failed { background: #c62828; } .skipped { background: #607d8b; }
.unverified { background: #ef6c00; } .idle { background: #ef6c00; }
.error { color: #c62828; font-weight: 600; }
.warning { color: #9a4a00; }
figure { display: inline-block; margin: .3rem 1rem .8rem 0; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #666; font-size: .8rem; }
"""
ENVIRONMENT_PACKAGES = ("contrastseg", "torch", "torchvision", "timm", "numpy", "openTSNE", "papermill", "nbval",
                        "seaborn", "matplotlib", "ipywidgets")
REPORTED_KEY = "reported"  # results key of a notebook's own reported-number records
REPORTED_METRICS = {"mIoU": "miou"}  # a reported metric -> our summary column (``<key>_mean``, ``<key>_std``)
TABLE_NOTEBOOK = re.compile(r"(?:table|fig)_(?P<table>.+)")
IDLE_SHARE = 0.5  # a row whose method term was non-zero on a smaller share of its steps is flagged


def write_report(
    preset_dir: str | os.PathLike,
    outcomes: Iterable[Any],
    title: str = "contrastseg notebook suite",
) -> Path:
    """Write ``preset_dir/report.html`` for the given notebook outcomes and return its path.

    Args:
        preset_dir: the batch folder (``<out_root>/<preset>``); created if missing.
        outcomes: `contrastseg.suite.NotebookOutcome` objects, or dicts with the same keys (``notebook``, ``title``,
            ``status``, ``skipped``, ``seconds``, ``error``, ``traceback``, ``results_dir``, ``output``).
        title: the page heading.
    """
    preset_dir = Path(preset_dir)
    preset_dir.mkdir(parents=True, exist_ok=True)
    items = [_as_dict(o) for o in outcomes]
    loaded = [_load(item.get("results_dir")) for item in items]

    n_failed = sum(o.get("status") != "ok" for o in items)
    n_skipped = sum(bool(o.get("skipped")) for o in items)
    summary = f"{len(items)} notebooks: {len(items) - n_failed} ok"
    if n_skipped:
        summary += f" ({n_skipped} skipped as current)"
    summary += f", {n_failed} failed"
    n_idle = sum(len(idle_rows(results)) for results, _ in loaded)
    if n_idle:
        summary += f"; {n_idle} table row(s) whose method term was zero on more than half of the steps"

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="meta">{_e(summary)}</p>',
        _contents(items, [results for results, _ in loaded]),
        '<p class="meta"><a href="#reported">Papers\' numbers beside ours</a> &middot; '
        '<a href="#environment">Environment</a></p>',
    ]
    for i, (item, (results, error)) in enumerate(zip(items, loaded)):
        parts.append(_section(i, item, preset_dir, results, error))
    parts.append(_reported_section(items, [results for results, _ in loaded]))
    parts.append('<h2 id="environment">Environment</h2>')
    parts.append(_kv_table(environment()))
    parts.append("</body></html>")

    path = preset_dir / "report.html"
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path


def environment() -> dict[str, str]:
    """Python and the installed ``ENVIRONMENT_PACKAGES`` with their versions, platform, device, git commit and date,
    for the report's footer (missing pieces are left out)."""
    env = package_versions(ENVIRONMENT_PACKAGES)
    env["platform"] = platform.platform()
    env["device"] = device_description()
    if git_commit() != UNKNOWN_COMMIT:
        env["git commit"] = git_commit()
    env["date"] = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    return env


def device_description() -> str:
    """The CUDA devices that torch sees, as ``<count> x <name>``, else the CPU model and its number of logical CPUs."""
    import torch

    if torch.cuda.is_available():
        names = Counter(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        return ", ".join(f"{count} x {name}" for name, count in names.items())
    return f"{cpu_model()}, {os.cpu_count()} logical CPUs"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def idle_rows(results: Mapping[str, Any]) -> list[tuple[str, float]]:
    """(row, share) for each row of the ``table`` results whose ``method_active`` share is below ``IDLE_SHARE``."""
    table = results.get("table")
    if not isinstance(table, list):
        return []
    return [(str(row.get("row", "?")), float(row["method_active"])) for row in table
            if isinstance(row, dict) and isinstance(row.get("method_active"), (int, float))
            and not isinstance(row.get("method_active"), bool) and row["method_active"] < IDLE_SHARE]


def reported_records(notebook: str, results: Mapping[str, Any]) -> list[dict]:
    """The papers' numbers that belong beside a notebook's results (see the module docstring), as records with the
    columns of ``contrastseg.tables.reported_numbers``."""
    if REPORTED_KEY in results:
        return list(results[REPORTED_KEY])
    match = TABLE_NOTEBOOK.fullmatch(Path(notebook).stem)
    if not match:
        return []
    from .tables import reported_numbers

    return reported_numbers(Path(notebook).parent.name, match["table"]).to_dict("records")


# --------------------------------------------------------------------------------------------------- sections


def _load(results_dir: str | os.PathLike | None) -> tuple[dict, str | None]:
    """A notebook's results (empty when it wrote none) and the error met reading them, if any."""
    try:
        return load_results(results_dir or ""), None
    except (OSError, ValueError) as exc:
        return {}, f"cannot read {RESULTS_FILE}: {exc}"


def _section(i: int, item: dict, preset_dir: Path, results: dict, error: str | None) -> str:
    status = item.get("status", "failed")
    skipped = bool(item.get("skipped"))
    badge_class, badge_text = ("skipped", "skipped (current)") if skipped else (status, status)
    if status != "ok":
        badge_class, badge_text = "failed", "failed"
    seconds = item.get("seconds")
    run_time = f"{seconds:.1f} s" if isinstance(seconds, (int, float)) else "n/a"
    if skipped:
        run_time += " (previous run)"

    out = [
        f'<h2 id="nb{i}">{_e(item.get("title") or item.get("notebook", "?"))} '
        f'<span class="badge {badge_class}">{_e(badge_text)}</span></h2>',
        f'<p class="path"><code>{_e(item.get("notebook", ""))}</code> &middot; run time {_e(run_time)}',
    ]
    if item.get("output"):
        out[-1] += f' &middot; executed copy <code>{_e(_rel(item["output"], preset_dir))}</code>'
    out[-1] += "</p>"
    if item.get("parameters"):
        params = ", ".join(f"{k}={v!r}" for k, v in item["parameters"].items() if k != "results_dir")
        out.append(f'<p class="path">parameters: <code>{_e(params)}</code></p>')

    if status != "ok":
        out.append(f'<p class="error">{_e(item.get("error") or "unknown error")}</p>')
        if item.get("traceback"):
            out.append(f"<details><summary>traceback</summary><pre>{_e(item['traceback'])}</pre></details>")

    if error:
        out.append(f'<p class="error">{_e(error)}</p>')
    if item.get("provenance"):
        out.append(f'<p class="warning"><span class="badge idle">other commit</span> {_e(item["provenance"])}</p>')
    for row, share in idle_rows(results):
        out.append(f'<p class="warning"><span class="badge idle">method idle</span> row <b>{_e(row)}</b>: its '
                   f"method term was non-zero on {100 * share:.0f} % of its steps (zero on {100 * (1 - share):.0f} %)"
                   "; its numbers say little about the method.</p>")
    shown = {key: value for key, value in results.items() if key != REPORTED_KEY}  # those get their own section
    if shown:
        out.append(f"<h3>Results</h3>{results_html(shown)}")
    results_dir = item.get("results_dir")
    if results_dir:
        results_dir = Path(results_dir)
        pngs = sorted(results_dir.glob("*.png")) if results_dir.is_dir() else []
        if pngs:
            out.append("<h3>Figures</h3>")
            out.extend(_figure(p) for p in pngs)
    return "\n".join(out)


def _reported_section(items: list[dict], results: list[dict]) -> str:
    """Per notebook with reported numbers, a table of them beside ours (``_reported_table``)."""
    from .tables import REPORTED_LABELS

    out = ['<h2 id="reported">Papers\' numbers beside ours</h2>',
           '<p class="meta">The papers\' settings differ from ours (real data sets, larger models): compare '
           "directions, not values. Ours: mean &plusmn; std over seeds of the same row, in percent (n=1: one "
           "seed, no spread). Who reported a "
           "number: " + "; ".join(f"{_e(label)} = {_e(text)}" for label, text in REPORTED_LABELS.items()) + ".</p>"]
    intro = len(out)
    for i, (item, notebook_results) in enumerate(zip(items, results)):
        records = reported_records(item.get("notebook", ""), notebook_results)
        if records:
            out.append(f'<h3><a href="#nb{i}">{_e(item.get("title") or item.get("notebook", "?"))}</a></h3>')
            out.append(_reported_table(records, notebook_results.get("table")))
    if len(out) == intro:
        out.append("<p>No notebook of this batch has reported numbers.</p>")
    return "\n".join(out)


def _reported_table(records: list[dict], table: Any) -> str:
    """Each reported number with its setting, our value of the same row (``table``: ``summarize`` records, if
    any), its source, label and verification status."""
    ours = {row.get("row"): row for row in table if isinstance(row, dict)} if isinstance(table, list) else {}
    header = ("row", "setting", "metric", "reported", "ours", "source", "label", "status")
    out = ["<table><tr>", *(f"<th>{name}</th>" for name in header), "</tr>"]
    for record in records:
        verified = record.get("verified") is True
        badge = "ok" if verified else "unverified"
        out.append(f"<tr><th>{_e(record.get('row', ''))}</th>"
                   + "".join(_td(record.get(column, "")) for column in ("setting", "metric", "value"))
                   + _td(_ours(ours.get(record.get("row")), record.get("metric")))
                   + "".join(_td(record.get(column, "")) for column in ("source", "label"))
                   + f'<td><span class="badge {badge}">{"verified" if verified else "unverified"}</span></td></tr>')
    out.append("</table>")
    return "".join(out)


def _ours(summary_row: Mapping[str, Any] | None, metric: str | None) -> str:
    """Our mean +- std of a reported metric in percent, from a ``summarize`` record (``mean (n=1)`` for one seed);
    "n/a" without a counterpart."""
    from .tables import spread_text

    def number(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    key = REPORTED_METRICS.get(metric or "")
    if not key or not summary_row or not number(summary_row.get(f"{key}_mean")):
        return "n/a"
    std = summary_row.get(f"{key}_std")  # NaN (one seed) is read back from results.json as the string "nan"
    seeds = summary_row.get("seeds")
    return spread_text(100 * summary_row[f"{key}_mean"], 100 * std if number(std) else None,
                       seeds if number(seeds) else None, number_format=".1f", plus_minus="±")


def results_html(results: Mapping[str, Any]) -> str:
    """HTML tables for a results dict: one name/value table of the flattened scalars, one table per 2-D entry."""
    flat: dict[str, Any] = {}
    tables: list[str] = []
    for key, value in results.items():
        grid = _grid(value)
        if grid is not None:
            tables.append(f"<h3>{_e(key)}</h3>{grid}")
        else:
            _flatten(key, value, flat)
    head = _kv_table(flat, header=("name", "value")) if flat else ""
    return head + "".join(tables)


def _flatten(prefix: str, value: Any, into: dict) -> None:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _flatten(f"{prefix}.{k}", v, into)
    else:
        into[prefix] = value


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _grid(value: Any) -> str | None:
    """A 2-D table for a dict of flat dicts or a list of flat dicts; None for anything else."""
    if isinstance(value, dict) and value and all(isinstance(v, dict) and v for v in value.values()):
        rows = list(value.items())
        corner = ""
    elif isinstance(value, list) and value and all(isinstance(v, dict) and v for v in value):
        rows = [(str(i), v) for i, v in enumerate(value)]
        corner = "#"
    else:
        return None
    if not all(_is_scalar(x) for _, row in rows for x in row.values()):
        return None
    columns: list[str] = []
    for _, row in rows:
        columns.extend(c for c in row if c not in columns)
    out = ["<table><tr>", f"<th>{_e(corner)}</th>", *(f"<th>{_e(c)}</th>" for c in columns), "</tr>"]
    for name, row in rows:
        cells = "".join(_td(row.get(c, "")) for c in columns)
        out.append(f"<tr><th>{_e(name)}</th>{cells}</tr>")
    out.append("</table>")
    return "".join(out)


def _kv_table(data: Mapping[str, Any], header: tuple[str, str] | None = None) -> str:
    out = ["<table>"]
    if header:
        out.append(f"<tr><th>{_e(header[0])}</th><th>{_e(header[1])}</th></tr>")
    for k, v in data.items():
        out.append(f"<tr><th>{_e(k)}</th>{_td(v)}</tr>")
    out.append("</table>")
    return "".join(out)


def _td(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f'<td class="num">{_e(str(value))}</td>'
    text = value if isinstance(value, str) else json.dumps(value)
    return f"<td>{_e(text)}</td>"


def _figure(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{_e(path.name)}">'
        f"<figcaption>{_e(path.name)}</figcaption></figure>"
    )


def _contents(items: list[dict], results: list[dict]) -> str:
    rows = ["<table><tr><th>notebook</th><th>status</th><th>run time</th></tr>"]
    for i, (item, notebook_results) in enumerate(zip(items, results)):
        status = "skipped (current)" if item.get("skipped") and item.get("status") == "ok" else item.get("status")
        seconds = item.get("seconds")
        run_time = f"{seconds:.1f} s" if isinstance(seconds, (int, float)) else "n/a"
        name = item.get("title") or item.get("notebook", "?")
        idle = idle_rows(notebook_results)
        flag = f' <span class="badge idle">{len(idle)} row(s) with an idle method</span>' if idle else ""
        rows.append(
            f'<tr><td><a href="#nb{i}">{_e(name)}</a></td><td>{_e(status)}{flag}</td>'
            f'<td class="num">{run_time}</td></tr>'
        )
    rows.append("</table>")
    return "".join(rows)


# --------------------------------------------------------------------------------------------------- helpers


def _as_dict(outcome: Any) -> dict:
    if isinstance(outcome, Mapping):
        return dict(outcome)
    if dataclasses.is_dataclass(outcome):
        return {f.name: getattr(outcome, f.name) for f in dataclasses.fields(outcome)}
    return dict(vars(outcome))


def _rel(path: str | os.PathLike, start: Path) -> str:
    try:
        return os.path.relpath(path, start)
    except ValueError:  # other drive on Windows
        return os.fspath(path)


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)
