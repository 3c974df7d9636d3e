"""One self-contained HTML page for a suite batch: what its preset can show, the claims ledger's verdicts, every
notebook's status, results tables and figures, the papers' numbers beside ours, and the environment (package
versions, device, git commit, date).

The page needs no server: figures are embedded as base64 PNGs, the CSS is inline. It is written by
`contrastseg.suite` after each batch, to ``<out_root>/<preset>/report.html``; beside it, each executed notebook
``<stem>.ipynb`` gets a static copy ``<stem>.html`` (``notebook_html``), linked from its section.

Order of the page:

1. A banner: what the batch's preset can and cannot show (``PRESET_BANNERS``).
2. The claims ledger, when a notebook's results have a ``ledger`` key (``notebooks/claims.ipynb``): one row per
   claim (claim, row - baseline, metric, difference [95 % CI], seeds, verdict badge, the paper's evidence), the
   inference-cost verdict, and the notebook's forest plot (``forest.png``) right below.
3. The contents, then one section per notebook: status, parameters, a link to its executed copy as HTML, warnings
   (a method that was idle, runs trained at another commit), its results tables and its figures, difference figures
   first (``DIFFERENCE_FIGURE``).
4. The papers' numbers beside ours, and the environment.

Results tables: nested dicts are flattened to dotted names (``per_class.road``); a top-level dict of flat dicts
(``{"pixel_contrast": {"miou": .., "biou": ..}, "ce": {...}}``) and a list of flat dicts (records) are shown as 2-D
tables. A record's name (the first of ``NAME_COLUMNS`` it has: ``row``, ``name``, ``pair``, ``claim``) is its first
column; ``<metric>_mean`` and ``<metric>_std`` become one ``mean ± std`` column (``mean (n=1)`` for one seed, by
``contrastseg.tables.spread_text``: no spread is shown where there is none). Every metric is a fraction, shown with
3 decimals. Per-run time columns (``train_seconds``, ``seconds``, step times, ``ms``: ``is_time_column``) are left
out: a cached run's wall time depends on the load of the machine it trained on; the methods' step costs are measured
side by side by ``benchmarks/step_time.py`` (results in ``benchmarks/results/``).

Papers' numbers: a notebook at ``notebooks/<paper>/table_<table>.ipynb`` (or ``fig_<table>.ipynb``) gets
``contrastseg.tables.reported_numbers(paper, table)``, the numbers its own cells show; a notebook elsewhere (one
that compares across papers) saves its records under the ``reported`` key of its results instead. Each is shown with
its source and verification status, beside our mean ± std of the same row where its ``table`` results have one. The
papers report percentages; the page divides them by 100, so that theirs and ours are both fractions.

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
import math
import os
import platform
import re
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Mapping
from urllib.parse import quote

from contrastseg.extras import import_notebooks_package
from contrastseg.provenance import UNKNOWN_COMMIT, git_commit, package_versions

from contrastseg.results import RESULTS_FILE, load_results

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 1.5rem auto; max-width: 1360px;
       padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; }
h2 { font-size: 1.25rem; margin: 2.2rem 0 .4rem; border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
h3 { font-size: 1rem; margin: 1rem 0 .3rem; color: #444; }
.meta, .path { color: #666; font-size: .9rem; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: .85rem; }
pre { background: #f6f6f6; padding: .6rem; overflow-x: auto; border-radius: 4px; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: .4rem 0 1rem; font-size: .9rem; }
th, td { border: 1px solid #ddd; padding: .25rem .6rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.ledger { width: 100%; }
table.ledger td.claim { min-width: 16rem; }
table.ledger td.evidence { font-size: .8rem; color: #444; max-width: 26rem; }
.paper { color: #666; font-size: .8rem; }
.badge { display: inline-block; padding: .05rem .5rem; border-radius: .8rem; font-size: .8rem; font-weight: 600;
         color: #fff; vertical-align: middle; white-space: nowrap; }
.ok, .supported { background: #2e7d32; } .failed, .contradicted { background: #c62828; }
.skipped, .inconclusive { background: #757575; } .unverified, .idle { background: #ef6c00; }
.banner { border-left: .35rem solid #ef6c00; background: #fff4e5; padding: .6rem .9rem; margin: .8rem 0; }
.banner.smoke { border-color: #c62828; background: #fdecea; }
.error { color: #c62828; font-weight: 600; }
.warning { color: #9a4a00; }
figure { display: inline-block; margin: .3rem 1rem .8rem 0; vertical-align: top; max-width: 100%; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #666; font-size: .8rem; }
"""
ENVIRONMENT_PACKAGES = ("contrastseg", "torch", "torchvision", "timm", "numpy", "openTSNE", "papermill", "nbval",
                        "seaborn", "matplotlib", "ipywidgets")
PRESET_BANNERS = {
    "smoke": "a pipeline check, not an experiment. Every run is far too short (a tiny CNN on 64 px synthetic scenes, "
             "100 steps; 50 for the mask-classification models) and there are far too few seeds: the numbers and "
             "the verdicts below mean nothing about the methods. They show that every notebook runs end to end.",
    "laptop": "a CPU-sized preset: the tiny CNN on 96 px synthetic scenes (512 training and 128 val images), 2500 "
              "steps, at which its cross-entropy baseline has reached its plateau, and 5 seeds for the claims "
              "ledger. The verdicts are measurements at that scale only: they say nothing about the papers' "
              "backbones, data sets or schedules.",
    "demo": "one GPU: ResNet-18 with DeepLabV3 at output stride 8 on 256 px synthetic scenes (512 training and 128 "
            "val images), 2000 steps, the seeds each notebook's manifest entry gives (3 for the tables). The "
            "verdicts hold for this small backbone on synthetic data, not for the papers' data sets.",
    "paper": "the papers' own settings (real data sets, their backbones, crops, schedules and test protocols; "
             "contrastseg.paper_settings), one execution per setting: {settings}. One seed per run unless the batch "
             "set more (--set seeds=[0,1,2]): a single seed gives a difference without an interval, so no verdict "
             "is more than inconclusive.",
}
"""What each preset can and cannot show, for the banner at the top of the page (``preset_banner``); the paper text's
``{settings}`` is filled with the batch's paper settings."""
LEDGER_KEY = "ledger"  # results key of the claims ledger (``notebooks/claims.ipynb``)
LEDGER_KEYS = (LEDGER_KEY, "inference_cost_verdict")  # shown in the ledger's own table, not among the results
LEDGER_FIGURE = "forest.png"  # the ledger's figure: each claim's difference with its interval
VERDICTS = ("supported", "contradicted", "inconclusive")  # also the CSS classes of their badges
PAPER_NAMES = {"pixel_contrast": "Pixel contrast", "contextrast": "Contextrast", "rc2l": "RC²L",
               "control": "control"}
INFERENCE_COST_CLAIM = "No method changes the inference cost."
VERDICT_RULE = ("supported when the whole 95 % paired t-interval of the mean difference lies above 0, contradicted "
                "when it lies below 0, inconclusive otherwise and with fewer than 2 seeds")
NAME_COLUMNS = ("row", "name", "pair", "claim")  # a record's name: the first of these it has is its first column
TIME_TOKENS = frozenset({"seconds", "second", "secs", "sec", "s", "ms", "time", "duration", "wall"})
TIMES_NOTE = ("Per-run time columns are left out ({columns}): a cached run's wall time depends on the load of the "
              "machine it trained on. The methods' step costs come from side-by-side benchmarks "
              "(benchmarks/step_time.py, results in benchmarks/results/).")
DIFFERENCE_FIGURE = re.compile(r"difference|forest|per_class")  # figure names shown first in a section
REPORTED_KEY = "reported"  # results key of a notebook's own reported-number records
REPORTED_METRICS = {"mIoU": "miou", "boundary mIoU": "boundary_iou"}
"""A reported metric (a percentage) -> our summary column (``<key>_mean``, ``<key>_std``, a fraction)."""
TABLE_NOTEBOOK = re.compile(r"(?:table|fig)_(?P<table>.+)")
IDLE_SHARE = 0.5  # a row whose method term was non-zero on a smaller share of its steps is flagged


def write_report(
    preset_dir: str | os.PathLike,
    outcomes: Iterable[Any],
    title: str = "contrastseg notebook suite",
    preset: str | None = None,
) -> Path:
    """Write ``preset_dir/report.html`` for the given notebook outcomes and return its path; convert each executed
    notebook to HTML beside it on the way (``notebook_html``).

    Args:
        preset_dir: the batch folder (``<out_root>/<preset>``); created if missing.
        outcomes: `contrastseg.suite.NotebookOutcome` objects, or dicts with the same keys (``notebook``, ``title``,
            ``status``, ``skipped``, ``seconds``, ``error``, ``traceback``, ``results_dir``, ``output``,
            ``parameters``, ``provenance``).
        title: the page heading.
        preset: the batch's preset, for the banner; None reads it from the outcomes (``batch_presets``).
    """
    preset_dir = Path(preset_dir)
    preset_dir.mkdir(parents=True, exist_ok=True)
    items = [_as_dict(o) for o in outcomes]
    loaded = [_load(item.get("results_dir")) for item in items]
    results = [notebook_results for notebook_results, _ in loaded]
    presets = [preset] if preset else batch_presets(items, results, preset_dir)
    # notebook index -> anchor of its ledger section: "ledger" for the first (the contents link it), then "ledger<i>"
    with_ledger = [i for i, found in enumerate(results) if isinstance(found.get(LEDGER_KEY), list)]
    ledgers = {i: "ledger" if n == 0 else f"ledger{i}" for n, i in enumerate(with_ledger)}

    n_failed = sum(o.get("status") != "ok" for o in items)
    n_skipped = sum(bool(o.get("skipped")) for o in items)
    summary = f"{len(items)} notebooks: {len(items) - n_failed} ok"
    if n_skipped:
        summary += f" ({n_skipped} skipped as current)"
    summary += f", {n_failed} failed"
    n_idle = sum(len(idle_rows(notebook_results)) for notebook_results in results)
    if n_idle:
        summary += f"; {n_idle} table row(s) whose method term was zero on more than half of the steps"

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        preset_banner(presets),
        f'<p class="meta">{_e(summary)}</p>',
    ]
    batch_kinds = [name.partition(":")[0] for name in presets]
    parts.extend(_ledger_section(i, items[i], results[i], anchor, batch_kinds) for i, anchor in ledgers.items())
    html_copies = [_html_copy(item) for item in items]
    parts += [
        '<h2 id="contents">Contents</h2>',
        _contents(items, results, ledgers, [copy for copy, _ in html_copies], preset_dir),
        '<p class="meta"><a href="#reported">Papers\' numbers beside ours</a> &middot; '
        '<a href="#environment">Environment</a></p>',
    ]
    for i, (item, (notebook_results, error), (html_copy, html_error)) in enumerate(zip(items, loaded, html_copies)):
        parts.append(_section(i, item, preset_dir, notebook_results, error, html_copy, html_error, ledgers.get(i)))
    parts.append(_reported_section(items, results))
    parts.append('<h2 id="environment">Environment</h2>')
    parts.append(_kv_table(environment()))
    parts.append("</body></html>")

    path = preset_dir / "report.html"
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path


def batch_presets(items: list[dict], results: list[dict], preset_dir: Path) -> list[str]:
    """The presets the batch ran at, in order: each notebook's injected ``preset`` parameter (``paper:<setting>``
    at the paper preset), else the ``preset`` its results saved; the batch folder's name when none says."""
    presets: list[str] = []
    for item, notebook_results in zip(items, results):
        name = (item.get("parameters") or {}).get("preset") or notebook_results.get("preset")
        if isinstance(name, str) and name and name not in presets:
            presets.append(name)
    return presets or [preset_dir.name]


def preset_banner(presets: list[str]) -> str:
    """The banner of the page: ``PRESET_BANNERS``' text for the kind of each preset (the part before ``:``); the
    paper text names the batch's settings. A preset without a text is named as such."""
    kinds = list(dict.fromkeys(name.partition(":")[0] for name in presets))
    lines = []
    for kind in kinds:
        text = PRESET_BANNERS.get(kind)
        if text is None:
            lines.append(f"<b>Preset {_e(kind)}</b>: no description of what this preset can show.")
            continue
        settings = [name.partition(":")[2] for name in presets if name.startswith(f"{kind}:")]
        text = text.format(settings=", ".join(settings) or "none named")
        lines.append(f"<b>Preset {_e(kind)}</b>: {_e(text)}")
    css = " ".join(kind for kind in kinds if kind in PRESET_BANNERS)
    return f'<div class="banner {css}" id="banner">' + "<br>".join(lines) + "</div>"


def notebook_html(ipynb_path: str | os.PathLike) -> Path | None:
    """A static HTML copy of an executed notebook, ``<stem>.html`` beside it (nbconvert's ``HTMLExporter``; its
    outputs, figures included, are embedded), and its path; None when there is no such notebook.

    A copy at least as new as the notebook is kept (a notebook skipped as current is not converted again).

    Raises:
        Exception: whatever nbconvert raises for a notebook it cannot read or convert.
    """
    if not ipynb_path:
        return None
    source = Path(ipynb_path)
    if not source.is_file():
        return None
    target = source.with_suffix(".html")
    if target.is_file() and target.stat().st_mtime >= source.stat().st_mtime:
        return target
    nbformat = import_notebooks_package("nbformat", "the report's notebook pages")
    HTMLExporter = import_notebooks_package("nbconvert", "the report's notebook pages").HTMLExporter
    body, _ = HTMLExporter().from_notebook_node(nbformat.read(os.fspath(source), as_version=4))
    partial = target.with_name(f".{target.name}.partial")
    partial.write_text(body, encoding="utf-8")
    partial.replace(target)  # a reader never sees a half-written page
    return target


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
    from contrastseg.tables import reported_numbers

    return reported_numbers(Path(notebook).parent.name, match["table"]).to_dict("records")


def is_time_column(name: str) -> bool:
    """True for a per-run time column or value name (``train_seconds``, ``seconds``, ``step time``, ``s/step``,
    ``step_ms``, ...): one of its words (split at anything but letters and digits) is in ``TIME_TOKENS``."""
    return any(word in TIME_TOKENS for word in re.split(r"[^a-z0-9]+", str(name).lower()))


# --------------------------------------------------------------------------------------------------- sections


def _load(results_dir: str | os.PathLike | None) -> tuple[dict, str | None]:
    """A notebook's results (empty when it wrote none) and the error met reading them, if any."""
    try:
        return load_results(results_dir or ""), None
    except (OSError, ValueError) as exc:
        return {}, f"cannot read {RESULTS_FILE}: {exc}"


def _html_copy(item: dict) -> tuple[Path | None, str | None]:
    """``notebook_html`` of an outcome's executed notebook, and the error met converting it (None when none)."""
    try:
        return notebook_html(item.get("output") or ""), None
    except Exception as exc:  # noqa: BLE001 - a notebook nbconvert cannot convert: say so, go on with the page
        return None, f"{type(exc).__name__}: {exc}"


def _ledger_section(i: int, item: dict, results: dict, anchor: str, batch_kinds: list[str]) -> str:
    """The claims ledger of notebook ``i``: where and how it was measured, the verdict table (``_ledger_table``)
    and its forest plot."""
    name = item.get("title") or item.get("notebook", "?")
    out = [f'<h2 id="{anchor}">Claims ledger: verdicts</h2>',
           f'<p class="meta">From <a href="#nb{i}">{_e(name)}</a>.']
    ledger = [record for record in results[LEDGER_KEY] if isinstance(record, dict)]
    presets = list(dict.fromkeys(str(record["preset"]) for record in ledger if record.get("preset")))
    presets = presets or ([str(results["preset"])] if results.get("preset") else [])
    if presets:
        out[-1] += f" Measured at the {_e(', '.join(presets))} preset"
        if isinstance(results.get("seeds"), list):
            out[-1] += f", seeds {_e(', '.join(str(seed) for seed in results['seeds']))}"
        out[-1] += "."
    weights = results.get("weights")
    if isinstance(weights, dict) and weights:
        out[-1] += " Contrastive weights chosen on val: " + _e(", ".join(
            f"{method} {weight:g}" if _number(weight) is not None else f"{method} {weight}"
            for method, weight in weights.items())) + "."
    out[-1] += f" Each difference is a row minus its baseline on the test split, paired by seed. Verdict: " \
               f"{_e(VERDICT_RULE)}.</p>"
    other = [kind for kind in dict.fromkeys(p.partition(":")[0] for p in presets) if kind not in batch_kinds]
    for kind in other:  # a ledger measured at another preset than the batch's: what that preset can show
        if kind in PRESET_BANNERS:
            text = PRESET_BANNERS[kind].format(settings=", ".join(p.partition(":")[2] for p in presets
                                                                   if p.startswith(f"{kind}:")) or "none named")
            out.append(f'<div class="banner {kind}"><b>Preset {_e(kind)}</b>: {_e(text)}</div>')
    if item.get("status") != "ok":
        out.append('<p class="error">This notebook failed in this batch: the ledger is what it saved before it '
                   "stopped (see its section).</p>")
    out.append(_ledger_table(i, ledger, results.get("inference_cost_verdict")))
    figure = Path(item["results_dir"]) / LEDGER_FIGURE if item.get("results_dir") else None
    if figure is not None and figure.is_file():
        out.append(_figure(figure))
    return "\n".join(out)


def _ledger_table(i: int, ledger: list[dict], cost_verdict: Any) -> str:
    """One row per claim record, columns claim (with its paper), row - baseline, metric, difference [95 % CI],
    seeds, verdict badge and the paper's evidence; then the inference-cost verdict (linked to notebook ``i``'s
    section, which holds the costs) when there is one."""
    header = ("claim", "row - baseline", "metric", "difference [95 % CI]", "seeds", "verdict", "paper's evidence")
    out = ['<div class="scroll"><table class="ledger"><tr>', *(f"<th>{_e(name)}</th>" for name in header), "</tr>"]
    for record in ledger:
        paper = PAPER_NAMES.get(str(record.get("paper", "")), str(record.get("paper", "")))
        out.append(
            f'<tr><td class="claim">{_e(record.get("claim", ""))}'
            + (f'<br><span class="paper">{_e(paper)}</span>' if paper else "") + "</td>"
            + f'<td>{_e(record.get("row", "?"))} - {_e(record.get("baseline", "?"))}</td>'
            + f'<td>{_e(record.get("metric", ""))}</td>'
            + f'<td class="num">{_e(_difference_text(record))}</td>'
            + _td(record.get("seeds", ""))
            + f"<td>{_verdict_badge(record.get('verdict'))}</td>"
            + f'<td class="evidence">{_e(record.get("paper_evidence", ""))}</td></tr>')
    if cost_verdict is not None:
        out.append(f'<tr><td class="claim">{_e(INFERENCE_COST_CLAIM)}</td><td>every row\'s deployed model</td>'
                   f'<td>parameters, FLOPs</td><td><a href="#nb{i}">the costs, per model</a></td><td>-</td>'
                   f"<td>{_verdict_badge(cost_verdict)}</td><td class=\"evidence\">-</td></tr>")
    out.append("</table></div>")
    return "".join(out)


def _difference_text(record: Mapping[str, Any]) -> str:
    """``+0.012 [-0.003, +0.027]``; without a finite interval (one seed) ``+0.012 (n=1; no interval)``."""
    difference = _number(record.get("difference"))
    if difference is None:
        return "n/a"
    low, high = _number(record.get("ci_low")), _number(record.get("ci_high"))
    if low is None or high is None:
        seeds = _number(record.get("seeds"))
        return f"{difference:+.3f} (n={int(seeds) if seeds is not None else '?'}; no interval)"
    return f"{difference:+.3f} [{low:+.3f}, {high:+.3f}]"


def _verdict_badge(verdict: Any) -> str:
    """A badge whose CSS class is the verdict (``VERDICTS``: green, red, grey); an unknown one is grey too."""
    text = str(verdict) if verdict is not None else "no verdict"
    css = text if text in VERDICTS else "skipped"
    return f'<span class="badge {css}">{_e(text)}</span>'


def _section(i: int, item: dict, preset_dir: Path, results: dict, error: str | None, html_copy: Path | None,
             html_error: str | None, ledger_anchor: str | None) -> str:
    """Notebook ``i``'s section: status, paths and run time, its executed copy as HTML, errors and warnings, its
    results tables and figures (difference figures first). With ``ledger_anchor``, the ledger's table and figure
    are not repeated here: a line links them."""
    status = item.get("status", "failed")
    skipped = bool(item.get("skipped"))
    badge_class, badge_text = ("skipped", "skipped (current)") if skipped else (status, status)
    if status != "ok":
        badge_class, badge_text = "failed", "failed"

    out = [
        f'<h2 id="nb{i}">{_e(item.get("title") or item.get("notebook", "?"))} '
        f'<span class="badge {badge_class}">{_e(badge_text)}</span></h2>',
        f'<p class="path"><code>{_e(item.get("notebook", ""))}</code> &middot; run time {_e(_run_time(item))}',
    ]
    if item.get("output"):
        out[-1] += f' &middot; executed copy <code>{_e(_rel(item["output"], preset_dir))}</code>'
    if html_copy is not None:
        out[-1] += f' &middot; <a href="{_href(html_copy, preset_dir)}">executed notebook (HTML)</a>'
    out[-1] += "</p>"
    if html_error:
        out.append(f'<p class="warning">The executed notebook could not be converted to HTML: {_e(html_error)}</p>')
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
    hidden = {REPORTED_KEY, *(LEDGER_KEYS if ledger_anchor else ())}  # shown in sections of their own
    if ledger_anchor:
        out.append(f'<p class="meta">Its verdicts and forest plot ({LEDGER_FIGURE}) are at the top: '
                   f'<a href="#{ledger_anchor}">claims ledger</a>.</p>')
    shown = {key: value for key, value in results.items() if key not in hidden}
    if shown:
        tables, dropped = _results_tables(shown)
        out.append(f"<h3>Results</h3>{tables}")
        if dropped:
            out.append(f'<p class="meta">{_e(TIMES_NOTE.format(columns=", ".join(dropped)))}</p>')
    results_dir = Path(item["results_dir"]) if item.get("results_dir") else None
    pngs = sorted(results_dir.glob("*.png")) if results_dir is not None and results_dir.is_dir() else []
    if ledger_anchor:
        pngs = [p for p in pngs if p.name != LEDGER_FIGURE]
    differences = [p for p in pngs if DIFFERENCE_FIGURE.search(p.stem)]
    others = [p for p in pngs if p not in differences]
    if differences:
        out.append("<h3>Differences</h3>")
        out.extend(_figure(p) for p in differences)
    if others:
        out.append("<h3>Figures</h3>")
        out.extend(_figure(p) for p in others)
    return "\n".join(out)


def _reported_section(items: list[dict], results: list[dict]) -> str:
    """Per notebook with reported numbers, a table of them beside ours (``_reported_table``)."""
    from contrastseg.tables import REPORTED_LABELS

    out = ['<h2 id="reported">Papers\' numbers beside ours</h2>',
           '<p class="meta">The papers\' settings differ from ours (real data sets, larger models): compare '
           "directions, not values. Both columns are fractions: the papers' percentages divided by 100, and ours, "
           "the mean &plusmn; std over seeds of the same row (n=1: one seed, no spread). Who reported a "
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
    """Each reported number with its setting (as a fraction where it is a percentage of ``REPORTED_METRICS``),
    our value of the same row (``table``: ``summarize`` records, if any), its source, label and verification
    status."""
    ours = {row.get("row"): row for row in table if isinstance(row, dict)} if isinstance(table, list) else {}
    header = ("row", "setting", "metric", "reported (fraction)", "ours (fraction)", "source", "label", "status")
    out = ['<div class="scroll"><table><tr>', *(f"<th>{name}</th>" for name in header), "</tr>"]
    for record in records:
        verified = record.get("verified") is True
        badge = "ok" if verified else "unverified"
        value = record.get("value", "")
        if record.get("metric") in REPORTED_METRICS and _number(value) is not None:
            value = _number(value) / 100
        out.append(f"<tr><th>{_e(record.get('row', ''))}</th>"
                   + "".join(_td(record.get(column, "")) for column in ("setting", "metric"))
                   + _td(value)
                   + f'<td class="num">{_e(_ours(ours.get(record.get("row")), record.get("metric")))}</td>'
                   + "".join(_td(record.get(column, "")) for column in ("source", "label"))
                   + f'<td><span class="badge {badge}">{"verified" if verified else "unverified"}</span></td></tr>')
    out.append("</table></div>")
    return "".join(out)


def _ours(summary_row: Mapping[str, Any] | None, metric: str | None) -> str:
    """Our mean ± std of a reported metric, a fraction with 3 decimals, from a ``summarize`` record (``mean (n=1)``
    for one seed); "n/a" without a counterpart."""
    from contrastseg.tables import spread_text

    key = REPORTED_METRICS.get(metric or "")
    mean = _number(summary_row.get(f"{key}_mean")) if key and summary_row else None
    if mean is None:
        return "n/a"
    # NaN (one seed) is read back from results.json as the string "nan" (or null): no spread
    return spread_text(mean, _number(summary_row.get(f"{key}_std")), _seeds(summary_row), plus_minus="±")


def results_html(results: Mapping[str, Any]) -> str:
    """HTML tables for a results dict: one name/value table of the flattened scalars, one table per 2-D entry
    (``_grid``); per-run time columns and values are left out (``is_time_column``)."""
    return _results_tables(results)[0]


def _results_tables(results: Mapping[str, Any]) -> tuple[str, list[str]]:
    """``results_html``'s HTML, and the names of the time columns and values it left out (in order, once each)."""
    flat: dict[str, Any] = {}
    tables: list[str] = []
    dropped: list[str] = []
    for key, value in results.items():
        if is_time_column(key):
            dropped.append(key)
            continue
        grid = _grid(value, dropped)
        if grid is not None:
            tables.append(f"<h3>{_e(key)}</h3>{grid}")
        else:
            _flatten(key, value, flat, dropped)
    head = _kv_table(flat, header=("name", "value")) if flat else ""
    return head + "".join(tables), list(dict.fromkeys(dropped))


def _flatten(prefix: str, value: Any, into: dict, dropped: list[str]) -> None:
    """Nested dicts to dotted names in ``into``; a name that ``is_time_column`` goes to ``dropped`` instead."""
    if isinstance(value, dict) and value:
        for k, v in value.items():
            name = f"{prefix}.{k}"
            if is_time_column(str(k)):
                dropped.append(name)
            else:
                _flatten(name, v, into, dropped)
    else:
        into[prefix] = value


def _is_cell(value: Any) -> bool:
    """A value one table cell can show: a scalar, or a list of scalars (per-seed values)."""
    scalar = value is None or isinstance(value, (bool, int, float, str))
    return scalar or isinstance(value, list) and all(x is None or isinstance(x, (bool, int, float, str))
                                                     for x in value)


def _grid(value: Any, dropped: list[str]) -> str | None:
    """A 2-D table for a dict of flat dicts (its keys name the rows) or a list of flat dicts (records); None for
    anything else.

    The row name comes first: the dict's key, or a record's first ``NAME_COLUMNS`` column (else a ``#`` index).
    A ``<m>_mean``/``<m>_std`` pair (or ``mean``/``std``) is one ``mean ± std`` column (``_spread_cell``). Time
    columns (``is_time_column``) are left out and their names appended to ``dropped``.
    """
    if isinstance(value, dict) and value and all(isinstance(v, dict) and v for v in value.values()):
        rows: list[tuple[str | None, dict]] = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, list) and value and all(isinstance(v, dict) and v for v in value):
        rows = [(None, v) for v in value]
    else:
        return None
    if not all(_is_cell(x) for _, row in rows for x in row.values()):
        return None
    columns: list[str] = []
    for _, row in rows:
        columns.extend(c for c in row if c not in columns)
    dropped.extend(c for c in columns if is_time_column(c))
    columns = [c for c in columns if not is_time_column(c)]
    name_column = next((c for c in NAME_COLUMNS if c in columns), None)
    if name_column is not None:
        columns = [name_column] + [c for c in columns if c != name_column]

    # (header, kind, column, second column): a std column is folded into its mean's ("spread"), ci_high into
    # ci_low's ("interval"); a paired-difference table (named by "pair") shows its means with a sign
    signed = name_column == "pair"
    shown: list[tuple[str, str, str, str | None]] = []
    for column in columns:
        base = column[:-len("_mean")] if column.endswith("_mean") else None
        if column == "mean" and "std" in columns:
            shown.append(("mean ± std", "spread", "mean", "std"))
        elif base is not None and f"{base}_std" in columns:
            shown.append((f"{base} (mean ± std)", "spread", column, f"{base}_std"))
        elif column == "ci_low" and "ci_high" in columns:
            shown.append(("95 % CI", "interval", "ci_low", "ci_high"))
        elif (column == "std" and "mean" in columns) or (column == "ci_high" and "ci_low" in columns) or (
                column.endswith("_std") and f"{column[:-len('_std')]}_mean" in columns):
            continue
        else:
            shown.append((column, "plain", column, None))

    records = rows[0][0] is None
    if not records:
        head_cells = ["<th></th>"]  # the corner above the dict's keys
    else:
        head_cells = ["<th>#</th>"] if name_column is None else []
    out = ['<div class="scroll"><table><tr>', *head_cells, *(f"<th>{_e(h)}</th>" for h, _, _, _ in shown), "</tr>"]
    for index, (name, row) in enumerate(rows):
        cells = []
        for position, (_, kind, column, second) in enumerate(shown):
            if records and name_column is not None and position == 0:
                cells.append(f"<th>{_e(_cell_text(row.get(column, '')))}</th>")
            elif kind == "spread":
                text = _spread_cell(row, column, second, "+.3f" if signed else ".3f")
                cells.append(f'<td class="num">{_e(text)}</td>')
            elif kind == "interval":
                low, high = _number(row.get(column)), _number(row.get(second))
                text = f"[{low:+.3f}, {high:+.3f}]" if low is not None and high is not None else "n/a"
                cells.append(f'<td class="num">{_e(text)}</td>')
            else:
                cells.append(_td(row.get(column, "")))
        label = "" if records and name_column is not None else f"<th>{_e(name if name is not None else index)}</th>"
        out.append(f"<tr>{label}{''.join(cells)}</tr>")
    out.append("</table></div>")
    return "".join(out)


def _spread_cell(row: Mapping[str, Any], mean_column: str, std_column: str, number_format: str = ".3f") -> str:
    """``mean ± std`` of a record (``tables.spread_text`` with ``number_format`` and the record's ``seeds``):
    ``mean (n=1)`` for one seed or a NaN std, never a zero spread."""
    from contrastseg.tables import spread_text

    mean = _number(row.get(mean_column))
    if mean is None:
        return "n/a"
    return spread_text(mean, _number(row.get(std_column)), _seeds(row), number_format=number_format, plus_minus="±")


def _kv_table(data: Mapping[str, Any], header: tuple[str, str] | None = None) -> str:
    out = ['<div class="scroll"><table>']
    if header:
        out.append(f"<tr><th>{_e(header[0])}</th><th>{_e(header[1])}</th></tr>")
    for k, v in data.items():
        out.append(f"<tr><th>{_e(k)}</th>{_td(v)}</tr>")
    out.append("</table></div>")
    return "".join(out)


def _td(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f'<td class="num">{_e(_cell_text(value))}</td>'
    return f"<td>{_e(_cell_text(value))}</td>"


def _cell_text(value: Any) -> str:
    """A cell's text: floats with 3 decimals (``%.4g`` from 1000 up: FLOPs), integers from 10 000 up with
    thousands separators, NaN (a float, or the string or null that results.json gives back) as "n/a", a list as its
    items joined by commas."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        if math.isinf(value):
            return str(value)
        return f"{value:.4g}" if abs(value) >= 1000 else f"{value:.3f}"
    if isinstance(value, str):
        return "n/a" if value == "nan" else value
    if isinstance(value, list):
        return ", ".join(_cell_text(x) for x in value)
    return json.dumps(value)


def _figure(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{_e(path.name)}">'
        f"<figcaption>{_e(path.name)}</figcaption></figure>"
    )


def _contents(items: list[dict], results: list[dict], ledger_anchors: dict[int, str],
              html_copies: list[Path | None], preset_dir: Path) -> str:
    """The contents table: the claims ledger first (with its verdict counts), then one row per notebook: status
    (and idle-method flag), run time and a link to its executed notebook as HTML."""
    rows = ['<div class="scroll"><table><tr><th>notebook</th><th>status</th><th>run time</th>'
            "<th>executed notebook</th></tr>"]
    for i, anchor in ledger_anchors.items():
        verdicts = Counter(str(record.get("verdict")) for record in results[i][LEDGER_KEY]
                           if isinstance(record, dict))
        counts = ", ".join(f"{verdicts[verdict]} {verdict}" for verdict in VERDICTS if verdicts[verdict])
        rows.append(f'<tr><td><a href="#{anchor}">Claims ledger: verdicts</a></td>'
                    f"<td>{sum(verdicts.values())} claims: {_e(counts)}</td><td></td><td></td></tr>")
    for i, (item, notebook_results, html_copy) in enumerate(zip(items, results, html_copies)):
        status = "skipped (current)" if item.get("skipped") and item.get("status") == "ok" else item.get("status")
        name = item.get("title") or item.get("notebook", "?")
        idle = idle_rows(notebook_results)
        flag = f' <span class="badge idle">{len(idle)} row(s) with an idle method</span>' if idle else ""
        link = f'<a href="{_href(html_copy, preset_dir)}">HTML</a>' if html_copy is not None else ""
        rows.append(
            f'<tr><td><a href="#nb{i}">{_e(name)}</a></td><td>{_e(status)}{flag}</td>'
            f'<td class="num">{_e(_run_time(item))}</td><td>{link}</td></tr>'
        )
    rows.append("</table></div>")
    return "".join(rows)


# --------------------------------------------------------------------------------------------------- helpers


def _number(value: Any) -> float | None:
    """A finite int or float as a float; None for anything else (NaN, the string "nan" or null of results.json,
    a bool, text)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _seeds(record: Mapping[str, Any]) -> int | None:
    """A record's number of seeds: its ``seeds`` count, or the length of its ``seeds`` list; None when unknown."""
    seeds = record.get("seeds")
    if isinstance(seeds, list):
        return len(seeds)
    count = _number(seeds)
    return int(count) if count is not None else None


def _run_time(item: Mapping[str, Any]) -> str:
    """A notebook's run time in this batch (of its previous run when it was skipped as current)."""
    seconds = _number(item.get("seconds"))
    text = f"{seconds:.1f} s" if seconds is not None else "n/a"
    return text + (" (previous run)" if item.get("skipped") and seconds is not None else "")


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


def _href(path: Path, start: Path) -> str:
    """A relative link from the page in ``start`` to ``path``, URL-quoted."""
    return _e(quote(Path(_rel(path, start)).as_posix(), safe="/@"))


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)
