"""Parameters and forward FLOPs of each method's training model against its deployed model, per preset.

    python benchmarks/deployed_costs.py    # smoke, laptop and demo presets; the five methods and CE with an aux head
    python benchmarks/deployed_costs.py --presets smoke --methods ce pixel_contrast:proj_dim=64

For each preset and method (a spec as in ``step_time.py``: ``method:field=value,...``), ``contrastseg.export.
deployment_costs`` builds the model with random weights (counts do not depend on them; ``pretrained`` is not
loaded) and counts, for one image at the preset's size: the training model's parameters (the model with its
projection and auxiliary heads, plus the objective's own modules, RC²L's region projector) and its forward FLOPs in
training mode; the deployed model's (``contrastseg.export.DeployedSegmentor``: what ``RunResult.export`` writes)
parameters and FLOPs; and, as a check, the parameters of the training model that get a gradient from the class
scores, which equal the deployed parameters when the deployed model keeps exactly what the prediction needs. FLOPs
are ``torch.utils.flop_counter``'s (convolutions, matrix products, attention). The losses, the memory banks (buffers,
not parameters) and RC²L's EMA teacher (a copy of the model that is not trained) are not counted. The counts are
exact and the same on any machine; the time it took is the only measured number. Writes a Markdown table with the
command and the machine.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from contrastseg.config import preset
from contrastseg.export import deployment_costs
from contrastseg.provenance import git_commit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_name  # noqa: E402
from step_time import checked_preset, parse_method  # noqa: E402

METHODS = ("ce", "ce:aux_weight=0.4", "pixel_contrast", "contextrast", "mask_classification", "rc2l")
PRESETS = ("smoke", "laptop", "demo")
DEFAULT_OUT = Path(__file__).parent / "results" / "deployed_costs.md"


def measure(presets: list[str], specs: list[str]) -> list[dict]:
    """One row per (preset, method spec): ``deployment_costs`` of its config, with the model's description and the
    seconds the counting took."""
    rows = []
    for preset_name in presets:
        for spec in specs:
            method, overrides = parse_method(spec)
            cfg = preset(preset_name, method=method, **overrides)
            start = time.perf_counter()
            costs = deployment_costs(cfg)
            rows.append({"preset": preset_name, "method": spec, "model": describe_model(cfg),
                         "image_size": cfg.image_size, "seconds": time.perf_counter() - start} | costs)
    return rows


def describe_model(cfg) -> str:
    """"tiny + fcn", "resnet18 + deeplabv3, aux head", "tiny + mask_classification (16 queries)"."""
    text = f"{cfg.backbone} + {cfg.head}"
    if cfg.head == "mask_classification":
        text += f" ({cfg.num_queries} queries)"
    return text + (", aux head" if cfg.aux_weight > 0 else "")


def flops_text(flops: float) -> str:
    """FLOPs in millions (M) below 1e9, else in billions (G), 4 significant digits; "0" for none."""
    if flops == 0:
        return "0"
    return f"{flops / 1e9:.4g} G" if flops >= 1e9 else f"{flops / 1e6:.4g} M"


def table(rows: list[dict]) -> list[str]:
    """The Markdown table of ``rows``: training and deployed parameters and FLOPs, what deployment drops."""
    lines = ["| preset | method | model | training parameters (model + objective) | training FLOPs | deployed "
             "parameters | deployed FLOPs | dropped parameters | dropped FLOPs | parameters the prediction depends "
             "on |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        dropped = row["training_parameters"] - row["deployed_parameters"]
        dropped_flops = row["training_flops"] - row["deployed_flops"]
        lines.append(
            f"| {row['preset']} ({row['image_size']} px) | {row['method']} | {row['model']} | "
            f"{row['training_parameters']:,} ({row['model_parameters']:,} + {row['objective_parameters']:,}) | "
            f"{flops_text(row['training_flops'])} | {row['deployed_parameters']:,} | "
            f"{flops_text(row['deployed_flops'])} | "
            f"{dropped:,} ({100 * dropped / row['training_parameters']:.1f} %) | {flops_text(dropped_flops)} "
            f"({100 * dropped_flops / row['training_flops']:.1f} %) | {row['prediction_parameters']:,} |")
    return lines


def report(rows: list[dict], command: str) -> str:
    seconds = sum(row["seconds"] for row in rows)
    return "\n".join([
        "# Training against deployed model: parameters and forward FLOPs", "",
        f"- command: `{command}`",
        f"- machine: {device_name(torch.device('cpu'))}, {torch.get_num_threads()} torch threads; torch "
        f"{torch.__version__}, Python {platform.python_version()}; commit {git_commit()}; "
        f"{datetime.now(timezone.utc):%Y-%m-%d}",
        f"- counting took {seconds:.0f} s in all (the only number here that depends on the machine, which was shared "
        f"with other jobs); the counts are exact",
        "- FLOPs: one forward pass of one image at the preset's size, `torch.utils.flop_counter` (convolutions, "
        "matrix products, attention; a multiply-add counts 2); training: the model in training mode (projection and "
        "auxiliary heads computed), losses not counted; deployed: `contrastseg.export.DeployedSegmentor`, what "
        "`RunResult.export` writes",
        "- parameters: training = the model with its projection and auxiliary heads + the objective's own modules "
        "(RC²L's region projector); memory banks are buffers and RC²L's EMA teacher (a copy of the model, not "
        "trained) is not counted; the last column counts the training model's parameters that get a gradient from "
        "the class scores (it equals the deployed parameters when deployment keeps exactly what the prediction "
        "needs)", "",
        *table(rows), ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), type=checked_preset,
                        help='"smoke", "laptop", "demo" or "paper:<setting>"')
    parser.add_argument("--methods", nargs="+", default=list(METHODS),
                        help="method specs, e.g. pixel_contrast or ce:aux_weight=0.4")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (0 = torch's default)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"Markdown file (default {DEFAULT_OUT.name} "
                                                                       "in benchmarks/results)")
    args = parser.parse_args(argv)
    command = " ".join(["python", "benchmarks/deployed_costs.py", *(sys.argv[1:] if argv is None else argv)])
    if args.threads:
        torch.set_num_threads(args.threads)
    text = report(measure(args.presets, args.methods), command)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
