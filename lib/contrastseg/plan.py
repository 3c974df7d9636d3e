"""Dry runs: which runs a notebook batch would train, the data it needs, and an estimate of its GPU hours.

With ``$CONTRASTSEG_PLAN`` naming a file, ``runs.get_or_train`` trains nothing: it appends the config to that file
(one JSON line per call) and returns NaN metrics, so a notebook executed in this mode lists its runs in a few
seconds. ``contrastseg.suite --dry-run`` executes every notebook so, then reports the plan with ``format_plan``.

The GPU-hour figure is an estimate, not a measurement: forward FLOPs counted by ``torch.utils.flop_counter`` on the
meta device at the training crop, times 3 for the backward pass, times the batch and the steps, times the method's
step-time overhead over cross-entropy measured on the CPU (``METHOD_OVERHEAD``), divided by an assumed sustained
throughput (``--tflops``, default ``ASSUMED_TFLOPS``); plus the evaluation at the test scales and flips, with
FLOPs scaled by pixels. Data loading, Hungarian matching, distance transforms and communication are not counted.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

from contrastseg.config import ExperimentConfig
from contrastseg.paths import resolve_data_root

PLAN_ENV = "CONTRASTSEG_PLAN"
# Sustained training throughput assumed for one H100-class GPU in bf16. Convolutional segmentation training reaches
# a small share of the peak (BatchNorm, interpolation, data loading); not measured here: after one measured run,
# calibrate with --tflops.
ASSUMED_TFLOPS = 25.0

# A step's cost relative to a cross-entropy step of the same model, from our CPU step-time measurements
# (benchmarks/results/step_time_*.json): demo preset for the dense methods, smoke for RC²L over mask classification.
METHOD_OVERHEAD = {"ce": 1.0, "pixel_contrast": 1.052, "pixel_contrast+memory": 1.294, "contextrast": 1.139,
                   "mask_classification": 1.0, "rc2l": 2.11}


def plan_file() -> Path | None:
    """The dry-run record file when planning (``$CONTRASTSEG_PLAN``), else None."""
    value = os.environ.get(PLAN_ENV)
    return Path(value) if value else None


def record(cfg: ExperimentConfig, path: Path) -> None:
    """Append ``cfg`` to the plan file."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(cfg.to_dict(), sort_keys=True) + "\n")


def placeholder_metrics(cfg: ExperimentConfig) -> dict:
    """What a planned run returns instead of its metrics: NaN everywhere a notebook reads a number."""
    nan = float("nan")
    return {"val": {"miou": nan, "pixel_accuracy": nan, "boundary_iou": nan, "boundary_f": nan,
                    "per_class_iou": [], "per_class_boundary_iou": [], "per_class_boundary_f": []},
            "steps": cfg.steps, "train_seconds": nan, "config_hash": cfg.hash(), "planned": True}


def read_plan(path: Path) -> list[ExperimentConfig]:
    """The configs recorded in a plan file, in call order (duplicates kept)."""
    if not path.is_file():
        return []
    return [ExperimentConfig.from_dict(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


# The config fields that shape the model; rows that differ only elsewhere (temperature, memory, seed) share a count.
MODEL_FIELDS = ("dataset", "backbone", "head", "output_stride", "method", "proj_dim", "contrast_levels",
                "aux_weight", "num_queries", "mask_dim", "decoder_layers")


def forward_flops(cfg: ExperimentConfig, height: int, width: int, training: bool = True) -> float:
    """FLOPs of one forward pass of ``cfg``'s model on one (height, width) image, counted on the meta device."""
    model_fields = {name: getattr(cfg, name) for name in MODEL_FIELDS}
    return _forward_flops(tuple(sorted(model_fields.items())), height, width, training)


@functools.lru_cache(maxsize=None)
def _forward_flops(model_fields: tuple, height: int, width: int, training: bool) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from contrastseg.engine.train import build_model

    cfg = ExperimentConfig(**dict(model_fields))
    try:
        with torch.device("meta"):
            model = build_model(cfg).train(training)
            with FlopCounterMode(display=False) as counter:
                model(torch.empty(1, 3, height, width))
        return float(counter.get_total_flops())
    except RuntimeError:  # a model with an op the meta device lacks (autocast in mask classification): on the CPU,
        scale = 4  # at a quarter of the side, FLOPs scaled back by the pixels (exact for convolutions)
        model = build_model(cfg).train(training)
        with FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, 3, max(32, height // scale), max(32, width // scale)))
        pixels = max(32, height // scale) * max(32, width // scale)
        return float(counter.get_total_flops()) * height * width / pixels


def method_overhead(cfg: ExperimentConfig) -> float:
    key = "pixel_contrast+memory" if cfg.method == "pixel_contrast" and cfg.memory != "none" else cfg.method
    return METHOD_OVERHEAD.get(key, 1.0)


@dataclass(frozen=True)
class RunEstimate:
    """A planned run's estimated cost: training and evaluation FLOPs, and GPU hours at ``tflops``."""

    train_flops: float
    eval_flops: float
    tflops: float

    @property
    def gpu_hours(self) -> float:
        return (self.train_flops + self.eval_flops) / (self.tflops * 1e12) / 3600


def estimate(cfg: ExperimentConfig, tflops: float = ASSUMED_TFLOPS) -> RunEstimate:
    """FLOP-based cost of training and evaluating ``cfg`` once (see the module docstring)."""
    from contrastseg.paper_settings import DATA_SETS

    height, width = cfg.crop_size()
    step_flops = 3 * forward_flops(cfg, height, width) * cfg.batch_size * method_overhead(cfg)
    if cfg.method == "rc2l":  # the unlabeled batch: teacher forward, student forward and backward
        step_flops += 4 * forward_flops(cfg, height, width) * (cfg.unlabeled_batch_size or cfg.batch_size)
    needs = DATA_SETS.get(cfg.dataset)
    val_images = needs.val_images if needs and not cfg.num_val else cfg.num_val
    val_pixels = needs.val_pixels if needs else cfg.image_size ** 2
    per_image = forward_flops(cfg, height, width, training=False) * val_pixels / (height * width)
    views = sum(scale ** 2 for scale in cfg.evaluation_scales()) * (2 if cfg.eval_flip else 1)
    return RunEstimate(step_flops * cfg.steps, per_image * views * val_images, tflops)


@dataclass
class PlannedNotebook:
    """One notebook execution of a dry run: its name, the preset it got, its recorded runs, and any failure."""

    name: str
    preset: str
    configs: list[ExperimentConfig]
    error: str = ""


def format_plan(notebooks: list[PlannedNotebook], tflops: float = ASSUMED_TFLOPS) -> str:
    """The dry run's report: runs per notebook (new ones and ones shared with earlier notebooks), GPU hours, data."""
    from contrastseg.data.real import PREPARE_COMMANDS, prepare_hint

    lines, seen, total_hours, data_sets = [], set(), 0.0, {}
    header = f"{'notebook':<44} {'runs':>5} {'new':>5} {'GPU h':>9}  setting"
    lines += [header, "-" * len(header)]
    for notebook in notebooks:
        unique = {cfg.hash(): cfg for cfg in notebook.configs}
        new = {key: cfg for key, cfg in unique.items() if key not in seen}
        seen.update(new)
        hours = sum(estimate(cfg, tflops).gpu_hours for cfg in new.values())
        total_hours += hours
        for cfg in unique.values():
            data_sets.setdefault(cfg.dataset, cfg.data_root)
        lines.append(f"{notebook.name:<44} {len(unique):>5} {len(new):>5} {hours:>9.1f}  {notebook.preset}")
        if notebook.error:
            lines.append(f"    planning stopped: {notebook.error}")
    lines += ["-" * len(header), f"{'total':<44} {'':>5} {len(seen):>5} {total_hours:>9.1f}",
              f"GPU hours: FLOP estimate at an assumed {tflops:g} TFLOP/s sustained per GPU (see contrastseg.plan); "
              f"divide by the GPU count for wall time under torchrun.", "", "data needed:"]
    for dataset, root in data_sets.items():
        if dataset == "synthscapes" and not root:
            lines.append("  synthscapes: generated on the fly")
            continue
        path = Path(resolve_data_root(root))
        state = "present" if path.is_dir() else "MISSING"
        hint = prepare_hint(dataset, path) if dataset in PREPARE_COMMANDS else \
            f"make it with `python data_scripts/make_synthetic.py --root {path}`"
        lines.append(f"  {dataset}: {path} ({state}); {hint}")
    return "\n".join(lines)
