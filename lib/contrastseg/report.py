"""One self-contained HTML page for a suite batch: every notebook's status, results table and figures.

The page needs no server and no other file: figures are embedded as base64 PNGs, the CSS is inline. It is written by
`contrastseg.suite` after each batch, to ``<out_root>/<preset>/report.html``.

Results tables: nested dicts are flattened to dotted names (``per_class.road``); a top-level dict of flat dicts
(``{"pixel_contrast": {"miou": .., "biou": ..}, "ce": {...}}``) and a list of flat dicts are shown as 2-D tables.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import html
import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Mapping

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
.error { color: #c62828; font-weight: 600; }
figure { display: inline-block; margin: .3rem 1rem .8rem 0; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #666; font-size: .8rem; }
"""


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

    n_failed = sum(o.get("status") != "ok" for o in items)
    n_skipped = sum(bool(o.get("skipped")) for o in items)
    summary = f"{len(items)} notebooks: {len(items) - n_failed} ok"
    if n_skipped:
        summary += f" ({n_skipped} skipped as current)"
    summary += f", {n_failed} failed"

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="meta">{_e(summary)}</p>',
        _contents(items),
    ]
    for i, item in enumerate(items):
        parts.append(_section(i, item, preset_dir))
    parts.append("<h2>Environment</h2>")
    parts.append(_kv_table(environment()))
    parts.append("</body></html>")

    path = preset_dir / "report.html"
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path


def environment() -> dict[str, str]:
    """Python, torch, platform, git commit and date, for the report's footer (missing pieces are left out)."""
    env = {"python": platform.python_version()}
    for package in ("contrastseg", "torch", "papermill"):
        try:
            env[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    env["platform"] = platform.platform()
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,  # this package's checkout, wherever the batch runs from
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        if commit:
            env["git commit"] = commit
    except (OSError, subprocess.SubprocessError):
        pass
    env["date"] = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    return env


# --------------------------------------------------------------------------------------------------- sections


def _section(i: int, item: dict, preset_dir: Path) -> str:
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

    results_dir = item.get("results_dir")
    if results_dir:
        results_dir = Path(results_dir)
        try:
            results = load_results(results_dir)
        except (OSError, ValueError) as exc:
            out.append(f'<p class="error">cannot read {RESULTS_FILE}: {_e(str(exc))}</p>')
            results = {}
        if results:
            out.append(f"<h3>Results</h3>{results_html(results)}")
        pngs = sorted(results_dir.glob("*.png")) if results_dir.is_dir() else []
        if pngs:
            out.append("<h3>Figures</h3>")
            out.extend(_figure(p) for p in pngs)
    return "\n".join(out)


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


def _contents(items: list[dict]) -> str:
    rows = ["<table><tr><th>notebook</th><th>status</th><th>run time</th></tr>"]
    for i, item in enumerate(items):
        status = "skipped (current)" if item.get("skipped") and item.get("status") == "ok" else item.get("status")
        seconds = item.get("seconds")
        run_time = f"{seconds:.1f} s" if isinstance(seconds, (int, float)) else "n/a"
        name = item.get("title") or item.get("notebook", "?")
        rows.append(
            f'<tr><td><a href="#nb{i}">{_e(name)}</a></td><td>{_e(status)}</td><td class="num">{run_time}</td></tr>'
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
