"""Training step time (and GPU memory) of each method against CE-only, side by side in one process.

    python benchmarks/step_time.py --preset demo --device cpu --steps 5 --full-memory
    python benchmarks/step_time.py --preset demo --device cuda --steps 30 \
        --methods ce pixel_contrast pixel_contrast:memory=both

Every method gets its own model, objective and optimizer, built from the preset's config with the overrides named
after the colon. The timed unit is ``contrastseg.engine.train.training_step`` (forward, loss terms, backward,
optimizer update, memory writes; for a semi-supervised method also the student on the CutMix-ed unlabeled batch, the
EMA teacher and its update), on one fixed batch of real SynthScapes samples, which also stands in for the unlabeled
batch. A mask-classification method (``mask_classification``, ``rc2l``) gets its preset's model settings. Steps are interleaved across methods, round
by round, so that a drift of the machine's speed hits all methods alike; the table reports the median step time and
its ratio to the first method. Writes JSON with the device, versions and the command.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from contrastseg.config import ExperimentConfig, preset
from contrastseg.data import dataset_info
from contrastseg.engine.semi import CutMix, EmaTeacher
from contrastseg.engine.train import (UnlabeledViews, build_model, build_optimizer, build_split, resolve_device,
                                      training_step)
from contrastseg.objectives import build_objective

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_name, write_result  # noqa: E402
from pixel_contrast import fill_with_random_rows  # noqa: E402

FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(ExperimentConfig)}


def parse_method(spec: str) -> tuple[str, dict]:
    """``"pixel_contrast:memory=both,temperature=0.2"`` -> ("pixel_contrast", {"memory": "both", "temperature": 0.2})."""
    method, _, rest = spec.partition(":")
    overrides = {}
    for item in filter(None, rest.split(",")):
        key, _, text = item.partition("=")
        kind = FIELD_TYPES.get(key)
        if kind is None:
            raise SystemExit(f"unknown config field {key!r} in {spec!r}; valid: {', '.join(FIELD_TYPES)}")
        overrides[key] = {"int": int, "float": float, "str": str, "bool": lambda t: t.lower() == "true"}[kind](text)
    return method, overrides


def measure(preset_name: str, specs: list[str], device: str, steps: int, warmup: int, threads: int,
            full_memory: bool = False) -> dict:
    torch.manual_seed(0)
    runs = {}
    for spec in specs:
        method, overrides = parse_method(spec)
        cfg = preset(preset_name, method=method, device=device, num_threads=threads, **overrides)
        info = dataset_info(cfg.dataset)
        target = resolve_device(cfg.device)
        model = build_model(cfg).to(target).train()
        objective = build_objective(cfg, info.num_classes, info.ignore_index)
        if full_memory and getattr(objective, "memory", None) is not None:
            for queue in objective.memory.memories.values():  # every slot filled: the cost of a late step
                fill_with_random_rows(queue, torch.Generator().manual_seed(0))
        objective = objective.to(target)
        optimizer = build_optimizer(cfg, [*model.parameters(), *objective.parameters()])
        teacher = EmaTeacher(model, cfg.ema_momentum) if objective.semi_supervised else None
        runs[spec] = {"cfg": cfg, "model": model, "objective": objective, "optimizer": optimizer, "times": [],
                      "peak_mb": 0.0, "teacher": teacher}
    if threads:
        torch.set_num_threads(threads)
    first = next(iter(runs.values()))["cfg"]
    samples = [build_split(first, "train", first.num_train)[i] for i in range(first.batch_size)]
    target = resolve_device(first.device)
    images = torch.stack([image for image, _ in samples]).to(target)
    labels = torch.stack([label for _, label in samples]).to(target)

    for round_index in range(warmup + steps):
        for run in runs.values():
            if target.type == "cuda":
                torch.cuda.synchronize(target)
                resident = torch.cuda.memory_allocated(target)
                torch.cuda.reset_peak_memory_stats(target)
            began = time.perf_counter()
            views = None
            if run["teacher"] is not None:  # semi-supervised: the same images stand in for the unlabeled batch
                boxes = CutMix.draw(len(images), *images.shape[-2:], run["cfg"].cutmix_probability, 0, round_index,
                                    target)
                views = UnlabeledViews(images, images, boxes)
            training_step(run["model"], run["objective"], run["optimizer"], images, labels, step=round_index,
                          lr=run["cfg"].lr, amp=run["cfg"].amp, unlabeled=views, teacher=run["teacher"])
            seconds = time.perf_counter() - began
            if round_index >= warmup:
                run["times"].append(seconds)
                if target.type == "cuda":
                    peak = (torch.cuda.max_memory_allocated(target) - resident) / 2**20
                    run["peak_mb"] = max(run["peak_mb"], peak)

    baseline = statistics.median(next(iter(runs.values()))["times"])
    rows = []
    for spec, run in runs.items():
        median = statistics.median(run["times"])
        rows.append({"method": spec, "median_ms": 1000 * median, "ratio_to_first": median / baseline,
                     "overhead_percent": 100 * (median / baseline - 1),
                     "step_peak_mb": run["peak_mb"] if target.type == "cuda" else None,
                     "times_ms": [1000 * t for t in run["times"]]})
    return {
        "preset": preset_name, "device": device_name(target), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "python": platform.python_version(), "steps": steps, "warmup": warmup,
        "batch_size": first.batch_size, "image_size": first.image_size, "backbone": first.backbone,
        "head": first.head, "full_memory": full_memory, "command": " ".join(["python", *sys.argv]), "rows": rows,
    }


def print_table(result: dict) -> None:
    print(f"{result['preset']} preset, {result['backbone']} + {result['head']}, {result['image_size']} px, "
          f"batch {result['batch_size']}, {result['device']}, torch {result['torch']}, "
          f"median of {result['steps']} steps, memory {'full' if result['full_memory'] else 'filling from empty'}")
    print(f"{'method':45s} {'ms/step':>10s} {'ratio':>7s} {'overhead':>9s} {'peak MB':>8s}")
    for row in result["rows"]:
        peak = "-" if row["step_peak_mb"] is None else f"{row['step_peak_mb']:.0f}"
        print(f"{row['method']:45s} {row['median_ms']:10.1f} {row['ratio_to_first']:7.3f} "
              f"{row['overhead_percent']:8.1f}% {peak:>8s}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="demo", choices=["smoke", "demo"])
    parser.add_argument("--methods", nargs="+", default=["ce", "pixel_contrast", "pixel_contrast:memory=both"])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per method")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per method first")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (0 = torch's default)")
    parser.add_argument("--full-memory", action="store_true",
                        help="fill every memory queue first (random unit rows), as late in training")
    parser.add_argument("--out", type=Path, help="JSON file (default benchmarks/results/step_time_<preset>_<dev>.json)")
    args = parser.parse_args(argv)
    result = measure(args.preset, args.methods, args.device, args.steps, args.warmup, args.threads,
                     args.full_memory)
    print_table(result)
    device_tag = "cuda" if resolve_device(args.device).type == "cuda" else "cpu"
    out = args.out or Path(__file__).parent / "results" / f"step_time_{args.preset}_{device_tag}.json"
    write_result(result, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
