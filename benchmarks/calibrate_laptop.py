"""Calibrate the ``laptop`` preset: cross-entropy learning curves on SynthScapes for candidate settings, on the CPU.

Each candidate is a CE run whose val mIoU is measured every tenth of its steps (``eval_every``). The rule the preset
must meet: the CE baseline has reached a plateau (val mIoU gains < ``PLATEAU_GAIN`` over the last 20 % of the steps)
at val mIoU >= ``TARGET_MIOU``, and one run takes <= ``MAX_RUN_SECONDS`` of wall time on a 2-core CPU with nothing
else running. The candidates' training wall time is measured without the intermediate evaluations
(``train_seconds``: the steps only); the chosen preset's whole run (start, steps, final evaluation) is timed again
with ``--time-preset``.

    python benchmarks/calibrate_laptop.py --out benchmarks/results/laptop_calibration   # the candidates
    python benchmarks/calibrate_laptop.py --time-preset                                 # the laptop preset, alone
    python benchmarks/calibrate_laptop.py --profile     # where its time goes: data, forward, loss, backward, optimizer

Writes ``<out>.json`` (every curve, per-class IoU, times), ``<out>.md`` (the table) and ``<out>.png`` (the curves).
Runs go to a temporary run store unless ``--root`` names one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from contrastseg import runs
from contrastseg.config import MASK_CLASSIFICATION_SETTINGS, laptop, smoke
from contrastseg.data import dataset_info
from contrastseg.provenance import git_commit, package_versions
from contrastseg.report import cpu_model

TARGET_MIOU = 0.45
PLATEAU_GAIN = 0.01
MAX_RUN_SECONDS = 180.0
CANDIDATES = {
    "tiny, 96 px, 1500 steps": dict(image_size=96, steps=1500),
    "tiny, 96 px, 2500 steps": dict(image_size=96, steps=2500),
    "tiny, 96 px, 3500 steps": dict(image_size=96, steps=3500),
    "tiny, 128 px, 1500 steps": dict(image_size=128, steps=1500),
}
"""Overrides of the smoke preset (512 training and 128 val images, batch 8, the tiny CNN with an FCN head)."""
MASK_CLASSIFICATION_CANDIDATES = {
    f"mask classification, 96 px, {steps} steps": MASK_CLASSIFICATION_SETTINGS["smoke"]
    | dict(method="mask_classification", image_size=96, steps=steps)
    for steps in (1500, 2500)
}
"""The supervised mask-classification baseline of RC²L on all labels, with the smoke preset's model and optimiser."""
COMMON = dict(num_train=512, num_val=128, checkpoint_every=500)


def plateau_gain(curve: list[dict]) -> float:
    """val mIoU at the end minus val mIoU at 80 % of the steps (the last evaluation at or before it)."""
    last_step = curve[-1]["step"]
    before = [point for point in curve if point["step"] <= 0.8 * last_step]
    return curve[-1]["miou"] - before[-1]["miou"]


def calibrate(candidates: dict[str, dict], root: Path) -> list[dict]:
    """Train each candidate (alone, one after the other) and return its curve, final metrics and times."""
    names = dataset_info("synthscapes").class_names
    rows = []
    for name, overrides in candidates.items():
        cfg = smoke(**COMMON | overrides, eval_every=max(overrides["steps"] // 10, 1))
        started = time.perf_counter()
        result = runs.get_or_train(cfg, root=root, progress=False)
        wall = time.perf_counter() - started
        curve = result.learning_curve()
        per_class = dict(zip(names, result.metrics["val"]["per_class_iou"]))
        rows.append({"candidate": name, "overrides": overrides, "curve": curve,
                     "miou": result.metrics["val"]["miou"], "plateau_gain": plateau_gain(curve),
                     "per_class_iou": per_class, "zero_iou_classes": [c for c, v in per_class.items() if v < 0.005],
                     "train_seconds": result.metrics["train_seconds"], "wall_seconds_with_curve": wall})
        print(f"{name}: mIoU {rows[-1]['miou']:.3f}, gain over the last 20 % {rows[-1]['plateau_gain']:+.3f}, "
              f"steps {rows[-1]['train_seconds']:.0f} s", file=sys.stderr)
    return rows


def meets_rule(row: dict) -> bool:
    return (row["miou"] >= TARGET_MIOU and row["plateau_gain"] < PLATEAU_GAIN
            and row["train_seconds"] <= MAX_RUN_SECONDS)


def markdown(rows: list[dict], machine: dict, baseline: str = "CE") -> str:
    lines = [
        f"# Calibration of the laptop preset ({baseline} on SynthScapes, CPU)",
        "",
        f"Machine: {machine['cpu']}, {machine['threads']} torch threads, nothing else running; torch "
        f"{machine['packages'].get('torch')}; commit {machine['commit']}; command "
        f"`{' '.join(['python', *sys.argv])}`.",
        f"Rule: val mIoU >= {TARGET_MIOU}, gain over the last 20 % of the steps < {PLATEAU_GAIN}, steps <= "
        f"{MAX_RUN_SECONDS:.0f} s.",
        "",
        "| candidate | val mIoU | gain over last 20 % | steps (s) | meets the rule | classes at 0 IoU |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(f"| {row['candidate']} | {row['miou']:.3f} | {row['plateau_gain']:+.3f} | "
                     f"{row['train_seconds']:.0f} | {'yes' if meets_rule(row) else 'no'} | "
                     f"{', '.join(row['zero_iou_classes']) or 'none'} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    for row in rows:
        ax.plot([p["step"] for p in row["curve"]], [p["miou"] for p in row["curve"]], marker="o", ms=3,
                label=row["candidate"])
    ax.axhline(TARGET_MIOU, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("step")
    ax.set_ylabel("val mIoU")
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def time_preset(root: Path) -> dict:
    """The laptop preset's CE run from start to metrics, timed as a user would meet it."""
    started = time.perf_counter()
    result = runs.get_or_train(laptop(), root=root, progress=False)
    return {"wall_seconds": time.perf_counter() - started, "train_seconds": result.metrics["train_seconds"],
            "miou": result.metrics["val"]["miou"]}


def profile_preset(root: Path, steps: int = 300) -> dict:
    """Where a laptop CE run's time goes: rendering the scenes (once per process), then over ``steps`` steps the data
    loader (augmentation and batching of rendered scenes, in the main process) and each part of a training step
    (forward, loss, backward, optimizer); then the whole run with the loader in the main process and in one worker
    (the same batches, so the same result)."""
    import importlib

    from torch.utils.data import DataLoader

    engine = importlib.import_module("contrastseg.engine.train")  # the module; contrastseg.engine.train is also its function
    from contrastseg.engine.batching import SeededAugmentation, StepBatchSampler, augmentation
    from contrastseg.methods import build_objective
    from contrastseg.objectives import weighted_total

    cfg = laptop()
    torch.manual_seed(cfg.seed)
    info = dataset_info(cfg.dataset)
    labeled, _ = engine.build_training_sets(cfg)
    began = time.perf_counter()
    for index in range(len(labeled)):  # SynthScapes renders a scene on first access and keeps it in memory
        labeled[index]
    render = time.perf_counter() - began
    train_set = SeededAugmentation(labeled, augmentation(cfg), cfg.seed)
    loader = DataLoader(train_set, batch_sampler=StepBatchSampler(len(train_set), cfg.batch_size, steps, cfg.seed, 0),
                        generator=torch.Generator().manual_seed(cfg.seed))
    model = engine.build_model(cfg)
    objective = build_objective(cfg, info.num_classes, info.ignore_index)
    optimizer = engine.build_optimizer(cfg, model.parameters())
    phases = dict.fromkeys(("data", "forward", "loss", "backward", "optimizer"), 0.0)
    model.train()
    clock = time.perf_counter()
    for step, (images, labels) in enumerate(loader):
        marks = [time.perf_counter()]
        outputs = model(images)
        marks.append(time.perf_counter())
        total = weighted_total(objective(outputs, labels, step), objective.weights(step))
        total.item()
        marks.append(time.perf_counter())
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        marks.append(time.perf_counter())
        optimizer.step()
        marks.append(time.perf_counter())
        phases["data"] += marks[0] - clock
        for name, start, end in zip(("forward", "loss", "backward", "optimizer"), marks, marks[1:]):
            phases[name] += end - start
        clock = time.perf_counter()
    per_step_ms = {name: 1000 * seconds / steps for name, seconds in phases.items()}
    whole = {}
    for workers in (0, 1):
        began = time.perf_counter()
        result = runs.get_or_train(laptop(num_workers=workers), root=root / f"workers{workers}", progress=False)
        whole[f"num_workers={workers}"] = {"wall_seconds": time.perf_counter() - began,
                                           "train_seconds": result.metrics["train_seconds"],
                                           "miou": result.metrics["val"]["miou"]}
    return {"render_seconds": render, "profiled_steps": steps, "per_step_ms": per_step_ms, "runs": whole}


def profile_markdown(profile: dict, machine: dict) -> str:
    """The profile as a Markdown report."""
    step_ms = profile["per_step_ms"]
    total = sum(step_ms.values())
    lines = [f"# Where a laptop CE run's time goes (CPU)", "",
             f"Machine: {machine['cpu']}, {machine['threads']} torch threads, nothing else running; torch "
             f"{machine['packages']['torch']}; commit {machine['commit']}; command `{profile['command']}`.", "",
             f"Rendering the 512 training scenes (once per process, kept in memory): {profile['render_seconds']:.2f} s.",
             "", f"A training step, mean over {profile['profiled_steps']} steps (the data loader in the main process, "
             "on rendered scenes):", "",
             "| part | ms/step | share |", "|---|---|---|"]
    lines += [f"| {name} | {ms:.1f} | {ms / total:.0%} |" for name, ms in step_ms.items()]
    lines += ["", "The whole run (2500 steps, final evaluation included), the loader in the main process and in one "
              "worker process:", "", "| loader | wall (s) | of which steps (s) | val mIoU |", "|---|---|---|---|"]
    lines += [f"| {name} | {run['wall_seconds']:.1f} | {run['train_seconds']:.1f} | {run['miou']:.4f} |"
              for name, run in profile["runs"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/laptop_calibration"))
    parser.add_argument("--root", type=Path, help="run store root (default: a temporary folder)")
    parser.add_argument("--time-preset", action="store_true", help="time the laptop preset's CE run instead")
    parser.add_argument("--profile", action="store_true",
                        help="profile the laptop preset's CE run (data, forward, loss, backward, optimizer) instead")
    parser.add_argument("--mask-classification", action="store_true",
                        help="calibrate the supervised mask-classification baseline instead of CE")
    args = parser.parse_args(argv)
    machine = {"cpu": cpu_model(), "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
               "platform": platform.platform(), "packages": package_versions(), "commit": git_commit()}
    with tempfile.TemporaryDirectory(prefix="contrastseg-calibration-") as scratch:
        root = args.root or Path(scratch)
        if args.profile:
            profile = profile_preset(root) | {"machine": machine, "command": " ".join(sys.argv)}
            args.out.with_name(args.out.name + "_profile.json").write_text(json.dumps(profile, indent=1))
            report = profile_markdown(profile, machine)
            args.out.with_name(args.out.name + "_profile.md").write_text(report)
            print(report)
            return 0
        if args.time_preset:
            timing = time_preset(root) | {"machine": machine, "command": " ".join(sys.argv)}
            print(json.dumps(timing, indent=1))
            args.out.with_name(args.out.name + "_preset_time.json").write_text(json.dumps(timing, indent=1))
            return 0
        rows = calibrate(MASK_CLASSIFICATION_CANDIDATES if args.mask_classification else CANDIDATES, root)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))
    baseline = "supervised mask classification" if args.mask_classification else "CE"
    args.out.with_suffix(".md").write_text(markdown(rows, machine, baseline))
    plot(rows, args.out.with_suffix(".png"))
    print(markdown(rows, machine, baseline))
    return 0


if __name__ == "__main__":
    sys.exit(main())
