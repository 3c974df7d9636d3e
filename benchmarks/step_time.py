"""Training step time, throughput (and GPU memory) of each method against CE-only, side by side in one process.

    python benchmarks/step_time.py --preset demo --device cpu --steps 5 --full-memory
    python benchmarks/step_time.py --preset demo --device cuda --steps 30 \
        --methods ce pixel_contrast pixel_contrast:memory=both

At the papers' scale (``--preset paper:<setting>``, a key of ``contrastseg.paper_settings.SETTINGS``), on random
tensors at the setting's crop, with one GPU's share of a data-parallel batch (``--batch-size 2``):

    python benchmarks/step_time.py --preset paper:pixel_contrast/cityscapes/hrnet_w48 --batch-size 2 \
        --device cuda --steps 20 --methods ce pixel_contrast pixel_contrast:memory=both
    python benchmarks/step_time.py --preset paper:contextrast/cityscapes/hrnet_w48 --batch-size 2 \
        --device cuda --steps 20 --methods ce contextrast contextrast:bane=off
    python benchmarks/step_time.py --preset paper:pixel_contrast/cityscapes/hrnet_w48 --batch-size 2 \
        --device cuda --steps 20 --warmup 3 --methods ce ce:speed=fast ce:channels_last=true,speed=fast \
        ce:channels_last=true,speed=fast,compile=true

Data-parallel, under torchrun, with DistributedDataParallel and the flattened all-reduce side by side
(``contrastseg.engine.distributed``; NCCL on GPUs, gloo on CPUs):

    torchrun --standalone --nproc-per-node 8 benchmarks/step_time.py \
        --preset paper:pixel_contrast/cityscapes/hrnet_w48 --batch-size 16 --device cuda --steps 20 \
        --methods ce pixel_contrast --gradient-sync ddp allreduce

Under torchrun ``--batch-size`` is the global batch, as in training: every process steps on its contiguous share
(``batch_size`` / processes images), BatchNorm is synchronised when the preset's ``sync_bn`` says so, and each
method spec gets one row per ``--gradient-sync`` value (default: the environment's, ``CONTRASTSEG_GRADIENT_SYNC``).
A step's time is that of the slowest process; images per second count the global batch, the share of the bf16 peak
is per GPU, the peak memory is process 0's. Process 0 prints the table and writes the JSON.

Every method gets its own model, objective and optimizer, built from the preset's config with the overrides named
after the colon (``speed``, ``channels_last`` and ``compile`` included, as in training; compiling happens in the
warmup steps), with random initial weights (the step time does not depend on them; a spec may still set
``pretrained``). The timed unit is ``contrastseg.engine.train.training_step`` (forward, loss terms, backward,
optimizer update, memory writes; for a semi-supervised method also the student on the CutMix-ed unlabeled batch, the
EMA teacher and its update), on one fixed batch, which also stands in for the unlabeled batch: real SynthScapes
samples at the smoke and demo presets; random tensors at the crop size (images uniform in [0, 1], labels uniform over
the classes) for a preset whose data set is another (usually not on disk where this runs) or with
``--random-batch``. A mask-classification method (``mask_classification``, ``rc2l``) gets its preset's model
settings. Steps are interleaved across methods, round by round, so that a drift of the machine's speed hits all
methods alike; the table reports the median step time, its ratio to the first method, images per second, and an
estimate of the training TFLOP/s and its share of the GPU's dense bf16 peak (``common.BF16_PEAK_TFLOPS``). Writes
JSON with the device, versions and the command.
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
from contrastseg.engine.distributed import (GRADIENT_SYNCS, Distributed, convert_sync_batchnorm, leave_process_group,
                                          resolve_device)
from contrastseg.engine.semi import CutMix, EmaTeacher, UnlabeledViews
from contrastseg.engine.speed import configure_kernels, memory_format
from contrastseg.engine.train import build_model, build_optimizer, build_split, build_training_loss, training_step
from contrastseg.methods import build_objective
from contrastseg.paper_settings import SETTINGS
from contrastseg.plan import forward_flops

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import bf16_peak_tflops, device_name, write_result  # noqa: E402
from pixel_contrast import fill_with_random_rows  # noqa: E402

FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(ExperimentConfig)}
BOOLEANS = {"true": True, "false": False}
SAMPLES_BATCH, RANDOM_BATCH = "synthscapes samples", "random tensors at the crop size"


def checked_preset(name: str) -> str:
    """``--preset``'s type: "smoke", "demo" or "paper:<setting>"; another value exits listing the valid ones."""
    try:
        preset(name)
    except ValueError as error:
        paper = "" if name.partition(":")[0] == "paper" else f"; or paper:<setting>, of {', '.join(SETTINGS)}"
        raise argparse.ArgumentTypeError(f"{error}{paper}") from None
    return name


def parse_method(spec: str) -> tuple[str, dict]:
    """``"pixel_contrast:memory=both,temperature=0.2"`` -> ("pixel_contrast", {"memory": "both",
    "temperature": 0.2})."""
    method, _, rest = spec.partition(":")
    overrides = {}
    for item in filter(None, rest.split(",")):
        key, _, text = item.partition("=")
        kind = FIELD_TYPES.get(key)
        if kind is None:
            raise SystemExit(f"unknown config field {key!r} in {spec!r}; valid: {', '.join(FIELD_TYPES)}")
        if kind == "bool" and text.lower() not in BOOLEANS:
            raise SystemExit(f"config field {key!r} in {spec!r} is true or false, got {text!r}")
        overrides[key] = {"int": int, "float": float, "str": str, "bool": lambda t: BOOLEANS[t.lower()]}[kind](text)
    return method, overrides


def timed_batch(cfg: ExperimentConfig, random: bool) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The batch every step trains on: images (B, 3, H, W) in [0, 1], labels (B, H, W) int64, and its kind.

    SynthScapes samples (B = ``cfg.batch_size``, H = W = ``cfg.image_size``), unless ``random`` or ``cfg`` reads
    another data set (or one from disk): then seeded uniform random images and labels in [0, num_classes) at the crop
    size (H, W) = ``cfg.crop_size()``.
    """
    if random or cfg.dataset != "synthscapes" or cfg.data_root:
        generator = torch.Generator().manual_seed(0)
        height, width = cfg.crop_size()
        images = torch.rand(cfg.batch_size, 3, height, width, generator=generator)
        labels = torch.randint(0, dataset_info(cfg.dataset).num_classes, (cfg.batch_size, height, width),
                               generator=generator)
        return images, labels, RANDOM_BATCH
    split = build_split(cfg, "train", cfg.num_train)
    samples = [split[i] for i in range(cfg.batch_size)]
    return torch.stack([image for image, _ in samples]), torch.stack([label for _, label in samples]), SAMPLES_BATCH


def measure(preset_name: str, specs: list[str], device: str, steps: int, warmup: int, threads: int,
            full_memory: bool = False, batch_size: int | None = None, random_batch: bool = False,
            gradient_syncs: list[str] | None = None) -> dict:
    """Time each method spec's training step (see the module docstring); ``batch_size`` overrides the preset's.

    Under torchrun every process calls this; each spec is timed once per ``gradient_syncs`` value (default: the
    environment's), and every process gets the result. Outside torchrun ``gradient_syncs`` must be None.

    Each row's ``train_tflops`` is an estimate: the model's forward FLOPs on one image at the batch's (H, W)
    (``contrastseg.plan.forward_flops``: convolutions and matmuls only, not the loss terms), times 3 for forward and
    backward, times the (global) batch size, over the median step time. ``fraction_of_bf16_peak`` divides it by the
    dense bf16 peak of all the processes' GPUs; None on the CPU or a GPU missing from ``common.BF16_PEAK_TFLOPS``.

    Raises:
        ValueError: ``gradient_syncs`` outside torchrun, or a batch that does not divide by the processes.
    """
    torch.manual_seed(0)
    world, target = Distributed.from_environment(device)
    if gradient_syncs and not world.active:
        raise ValueError("--gradient-sync compares gradient synchronisations between processes; start the benchmark "
                         "under torchrun with --nproc-per-node 2 or more")
    syncs = (gradient_syncs or [world.gradient_sync]) if world.active else [None]
    fixed = {"device": device, "num_threads": threads, "pretrained": ""}
    if batch_size is not None:
        fixed["batch_size"] = batch_size
    runs = {}
    for spec in specs:
        method, overrides = parse_method(spec)
        cfg = preset(preset_name, **({"method": method} | fixed | overrides))
        info = dataset_info(cfg.dataset)
        for sync in syncs:
            run_world = dataclasses.replace(world, gradient_sync=sync) if sync else world
            model = build_model(cfg)
            if world.active and cfg.sync_bn:
                model = convert_sync_batchnorm(model, target)
            model = model.to(target).train()
            world.broadcast_parameters(model)
            objective = build_objective(cfg, info.num_classes, info.ignore_index)
            if full_memory and getattr(objective, "memory", None) is not None:
                for queue in objective.memory.memories.values():  # every slot filled: the cost of a late step
                    fill_with_random_rows(queue, torch.Generator().manual_seed(0))
            objective = objective.to(target)
            optimizer = build_optimizer(cfg, [*model.parameters(), *objective.parameters()])
            teacher = EmaTeacher(model, cfg.ema_momentum) if cfg.method_spec().semi_supervised else None
            runs[f"{spec} [{sync}]" if sync else spec] = {
                "cfg": cfg, "model": model, "objective": objective, "optimizer": optimizer, "times": [],
                "peak_mb": 0.0, "teacher": teacher, "world": run_world, "gradient_sync": sync,
                "forward": build_training_loss(cfg, model, objective, target, run_world)}
    if threads:
        torch.set_num_threads(threads)
    first = next(iter(runs.values()))["cfg"]
    images, labels, batch_kind = timed_batch(first, random_batch)
    if len(images) % world.world_size:
        raise ValueError(f"--batch-size {len(images)} is the global batch and must divide by the "
                         f"{world.world_size} processes")
    share = slice(world.rank * len(images) // world.world_size, (world.rank + 1) * len(images) // world.world_size)
    labels = labels[share].to(target)
    for run in runs.values():
        run["images"] = images[share].to(target, memory_format=memory_format(run["cfg"].channels_last))

    for round_index in range(warmup + steps):
        for run in runs.values():
            configure_kernels(run["cfg"].speed)
            if target.type == "cuda":
                torch.cuda.synchronize(target)
                resident = torch.cuda.memory_allocated(target)
                torch.cuda.reset_peak_memory_stats(target)
            began = time.perf_counter()
            views = None
            if run["teacher"] is not None:  # semi-supervised: the same images stand in for the unlabeled batch
                boxes = CutMix.draw(len(run["images"]), *images.shape[-2:], run["cfg"].cutmix_probability, 0,
                                    round_index, target)
                views = UnlabeledViews(run["images"], run["images"], boxes)
            training_step(run["model"], run["objective"], run["optimizer"], run["images"], labels, step=round_index,
                          lr=run["cfg"].lr, amp=run["cfg"].amp, unlabeled=views, teacher=run["teacher"],
                          forward=run["forward"], world=run["world"])
            seconds = time.perf_counter() - began
            if round_index >= warmup:
                run["times"].append(seconds)
                if target.type == "cuda":
                    peak = (torch.cuda.max_memory_allocated(target) - resident) / 2**20
                    run["peak_mb"] = max(run["peak_mb"], peak)
    for run in runs.values():  # a step lasts as long as its slowest process
        run["times"] = [max(times) for times in zip(*world.gather_objects(run["times"]))]

    name = device_name(target)
    peak_tflops = bf16_peak_tflops(name) if target.type == "cuda" else None
    images_per_batch, (height, width) = len(images), images.shape[-2:]
    baseline = statistics.median(next(iter(runs.values()))["times"])
    rows = []
    for label, run in runs.items():
        median = statistics.median(run["times"])
        train_tflops = 3 * forward_flops(run["cfg"], height, width) * images_per_batch / median / 1e12
        rows.append({"method": label, "gradient_sync": run["gradient_sync"], "median_ms": 1000 * median,
                     "ratio_to_first": median / baseline, "overhead_percent": 100 * (median / baseline - 1),
                     "images_per_second": images_per_batch / median, "train_tflops": train_tflops,
                     "fraction_of_bf16_peak": train_tflops / (peak_tflops * world.world_size) if peak_tflops else None,
                     "step_peak_mb": run["peak_mb"] if target.type == "cuda" else None,
                     "times_ms": [1000 * t for t in run["times"]]})
    launcher = ["torchrun", f"--nproc-per-node {world.world_size}"] if world.active else ["python"]
    return {
        "preset": preset_name, "device": name, "bf16_peak_tflops": peak_tflops, "threads": torch.get_num_threads(),
        "torch": torch.__version__, "python": platform.python_version(), "steps": steps, "warmup": warmup,
        "processes": world.world_size, "batch_size": images_per_batch, "batch": batch_kind, "crop": [height, width],
        "image_size": first.image_size, "backbone": first.backbone, "head": first.head, "full_memory": full_memory,
        "command": " ".join([*launcher, *sys.argv]), "rows": rows,
    }


def print_table(result: dict) -> None:
    height, width = result["crop"]
    print(f"{result['preset']} preset, {result['backbone']} + {result['head']}, {height}x{width} px "
          f"({result['batch']}), batch {result['batch_size']}, {result['device']} x {result['processes']}, "
          f"torch {result['torch']}, "
          f"median of {result['steps']} steps, memory {'full' if result['full_memory'] else 'filling from empty'}")
    print(f"{'method':45s} {'ms/step':>10s} {'ratio':>7s} {'overhead':>9s} {'img/s':>8s} {'TFLOP/s':>8s} "
          f"{'% peak':>7s} {'peak MB':>8s}")
    for row in result["rows"]:
        memory = "-" if row["step_peak_mb"] is None else f"{row['step_peak_mb']:.0f}"
        share = "-" if row["fraction_of_bf16_peak"] is None else f"{100 * row['fraction_of_bf16_peak']:.1f}"
        print(f"{row['method']:45s} {row['median_ms']:10.1f} {row['ratio_to_first']:7.3f} "
              f"{row['overhead_percent']:8.1f}% {row['images_per_second']:8.2f} {row['train_tflops']:8.2f} "
              f"{share:>7s} {memory:>8s}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="demo", type=checked_preset,
                        help='"smoke", "demo" or "paper:<setting>" (contrastseg.paper_settings.SETTINGS)')
    parser.add_argument("--methods", nargs="+", default=["ce", "pixel_contrast", "pixel_contrast:memory=both"])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per method")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per method first")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (0 = torch's default)")
    parser.add_argument("--batch-size", type=int, help="images per step (default: the preset's)")
    parser.add_argument("--random-batch", action="store_true",
                        help="random tensors at the crop size even where SynthScapes samples could be generated")
    parser.add_argument("--full-memory", action="store_true",
                        help="fill every memory queue first (random unit rows), as late in training")
    parser.add_argument("--gradient-sync", nargs="+", choices=GRADIENT_SYNCS,
                        help="under torchrun: time every method with each of these gradient synchronisations "
                             "(default: $CONTRASTSEG_GRADIENT_SYNC, else ddp)")
    parser.add_argument("--out", type=Path, help="JSON file (default benchmarks/results/step_time_<preset>_<dev>.json, "
                                                 "':' and '/' of the preset as '_', <dev> with _x<N> for N processes)")
    args = parser.parse_args(argv)
    world, _ = Distributed.from_environment(args.device)  # joins torchrun's process group, if any
    try:
        result = measure(args.preset, args.methods, args.device, args.steps, args.warmup, args.threads,
                         args.full_memory, args.batch_size, args.random_batch, args.gradient_sync)
    except ValueError as error:
        parser.error(str(error))
    finally:
        leave_process_group()  # every process has measured; the group ends before any exits
    if not world.is_main:
        return 0
    print_table(result)
    device_tag = "cuda" if resolve_device(args.device).type == "cuda" else "cpu"
    if result["processes"] > 1:
        device_tag += f"_x{result['processes']}"
    preset_tag = args.preset.replace(":", "_").replace("/", "_")
    out = args.out or Path(__file__).parent / "results" / f"step_time_{preset_tag}_{device_tag}.json"
    write_result(result, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
