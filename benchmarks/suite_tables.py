"""A suite batch's tables as one Markdown page, for committing what a (long) batch measured.

    python benchmarks/suite_tables.py runs/demo --note "CPU, steps cut to 10 of 2000" \
        --out benchmarks/results/demo_cpu_pixel_contrast.md

Reads ``<batch>/suite.json`` and each notebook's ``results.json`` (``contrastseg.results``); every notebook whose
results hold a ``table`` (the rows x seeds summaries of ``contrastseg.tables.summarize``) becomes a Markdown table of
mean +- standard deviation per metric, and paired differences (``differences`` or ``gain``: records of
``contrastseg.tables.paired_differences``) a second table with their 95 % interval (a paired t-interval) when there is one; other
notebooks are listed with their status. The environment (package versions, device, git commit) heads the page, as in
the HTML report.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from contrastseg.report import environment
from contrastseg.results import load_results
from contrastseg.tables import spread_text

METRICS = (("miou", "val mIoU"), ("boundary_iou", "boundary IoU"), ("boundary_f", "boundary F"))


def table_markdown(records: list[dict]) -> str:
    """Rows of ``summarize(...).reset_index()`` records as a Markdown table (mean +- std, 3 decimals; mean (n=1)
    for one seed)."""
    present = [(key, name) for key, name in METRICS if any(f"{key}_mean" in r for r in records)]
    lines = ["| row | " + " | ".join(name for _, name in present) + " | seeds |",
             "|---|" + "---:|" * len(present) + "---:|"]
    for r in records:
        cells = [spread_text(r[f"{key}_mean"], r.get(f"{key}_std"), r.get("seeds"), plus_minus="±")
                 for key, _ in present]
        lines.append(f"| {r['row']} | " + " | ".join(cells) + f" | {r.get('seeds', '')} |")
    return "\n".join(lines)


def differences_markdown(records: list[dict]) -> str:
    """Records of ``paired_differences(...).reset_index()`` as a Markdown table (3 decimals; no std for one seed)."""
    with_interval = any("ci_low" in r for r in records)
    lines = ["| pair | mean difference | std | " + ("95% interval | " if with_interval else "") + "seeds |",
             "|---|---:|---:|" + ("---|" if with_interval else "") + "---:|"]
    for r in records:
        # one seed: results.json holds "nan" for the std and the interval; neither exists, so neither is shown
        bounds = [r.get("ci_low"), r.get("ci_high")]
        interval = ""
        if with_interval:
            known = all(isinstance(bound, (int, float)) for bound in bounds)
            interval = (f"[{bounds[0]:+.3f}, {bounds[1]:+.3f}] | " if known else "- | ")
        std = r.get("std")
        std = f"{std:.3f}" if isinstance(std, (int, float)) and r.get("seeds") != 1 else "-"
        lines.append(f"| {r['pair']} | {r['mean']:+.3f} | {std} | {interval}{r.get('seeds', '')} |")
    return "\n".join(lines)


def batch_markdown(batch_dir: Path, note: str = "") -> str:
    summary = json.loads((batch_dir / "suite.json").read_text())
    parts = [f"# Suite batch: preset {summary['preset']}", ""]
    if note:
        parts += [note, ""]
    parts += ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in environment().items()] + [""]
    for notebook, outcome in summary["notebooks"].items():
        parts.append(f"## {notebook} ({outcome['status']}, {outcome.get('seconds') or 0:.0f} s)")
        parts.append("")
        results = load_results(outcome["results_dir"]) if outcome.get("results_dir") else {}
        if isinstance(results.get("table"), list) and results["table"]:
            parts += [f"seeds {results.get('seeds')}", "", table_markdown(results["table"]), ""]
            differences = results.get("differences") or results.get("gain")
            if differences:
                parts += ["paired by seed:", "", differences_markdown(differences), ""]
        elif outcome.get("error"):
            parts += [f"error: {outcome['error']}", ""]
        else:
            parts += ["(a figure notebook: see its executed copy or the HTML report)", ""]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("batch_dir", type=Path, help="a suite batch folder, e.g. runs/demo")
    parser.add_argument("--note", default="", help="a paragraph under the title: machine, steps, caveats")
    parser.add_argument("--out", type=Path, help="Markdown file (default: print)")
    args = parser.parse_args(argv)
    if not (args.batch_dir / "suite.json").is_file():
        parser.error(f"{args.batch_dir / 'suite.json'} not found: is {args.batch_dir} a suite batch folder?")
    text = batch_markdown(args.batch_dir, args.note)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
        print(f"wrote {args.out}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
