"""Benchmark: what BANE costs per training step, and how much of it is the distance transform.

One step of Contextrast runs BANE once per projected level: class-wise error maps of the final prediction at the
level's resolution, their exact Euclidean distance transform (``samplers.distance_transform``, one batched call over
every class with errors), and the per-class selection. This times, per step (all levels together):

* ``distance_transform``: the batched EDT alone, on the same stacked class-wise masks BANE builds;
* ``bane``: the whole of ``boundary_aware_negatives`` (masks, EDT, selection) for every level.

Inputs are SynthScapes-like: label maps of blobs (``--classes`` classes) and predictions wrong on about
``--error-rate`` of the pixels, in blobs (errors come in regions, as in a real prediction), resized to each level.

Scales: ``demo`` = batch 8 of 256 px images, levels 64x64 + 3 x 32x32 (ResNet at output stride 8, strides 4, 8, 8,
8), 9 classes; ``paper`` = batch 8 of 512x1024 crops, levels 128x256 + 3 x 64x128, 19 classes (Cityscapes).

Usage:
    python benchmarks/contextrast_bane.py --scale demo [--device cpu|cuda] [--repeats N] [--threads N] [--out FILE]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from contrastseg.methods.contextrast.bane import boundary_aware_negatives
from contrastseg.samplers import distance_transform, downsample_labels

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_name, write_result  # noqa: E402

SCALES = {
    "demo": {"batch": 8, "image": (256, 256), "level_strides": (4, 8, 8, 8), "classes": 9},
    "paper": {"batch": 8, "image": (512, 1024), "level_strides": (4, 8, 8, 8), "classes": 19},
}


def blob_maps(batch: int, size: tuple[int, int], classes: int, error_rate: float,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels and predictions of blobs (16 px cells, bilinear-smoothed then arg-maxed), wrong on ~error_rate."""
    cells = (size[0] // 16, size[1] // 16)

    def blobs(values: int) -> torch.Tensor:
        scores = torch.rand(batch, values, *cells, generator=generator)
        return F.interpolate(scores, size=size, mode="bilinear", align_corners=False).argmax(1)

    labels = blobs(classes)
    smooth = F.interpolate(torch.rand(batch, 1, *cells, generator=generator), size=size, mode="bilinear",
                           align_corners=False)[:, 0]
    wrong = smooth < torch.quantile(smooth[:, ::4, ::4].flatten(), error_rate)  # the lowest error_rate: blobs
    predictions = torch.where(wrong, (labels + 1 + blobs(classes - 1)) % classes, labels)
    return labels, predictions


def class_masks(labels: torch.Tensor, predictions: torch.Tensor) -> torch.Tensor:
    """The stacked class-wise error masks that BANE hands to the distance transform. Shape: (C' * B, h, w)."""
    errors = predictions != labels
    present = torch.unique(labels[errors])
    return torch.cat([errors & (labels == cls) for cls in present.tolist()])


def timed(function, device: torch.device, repeats: int) -> float:
    """Median seconds of ``function()`` over ``repeats`` calls after one warm-up."""
    times = []
    for index in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        began = time.perf_counter()
        function()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if index:
            times.append(time.perf_counter() - began)
    return statistics.median(times)


def measure(scale: str, device: torch.device, repeats: int, error_rate: float) -> dict:
    setting = SCALES[scale]
    labels, predictions = blob_maps(setting["batch"], setting["image"], setting["classes"], error_rate,
                                    torch.Generator().manual_seed(0))
    labels, predictions = labels.to(device), predictions.to(device)
    levels = []
    for stride in setting["level_strides"]:
        size = (setting["image"][0] // stride, setting["image"][1] // stride)
        levels.append((downsample_labels(labels, size), downsample_labels(predictions, size)))
    masks = [class_masks(*level) for level in levels]
    edt_seconds = timed(lambda: [distance_transform(mask) for mask in masks], device, repeats)
    bane_seconds = timed(lambda: [boundary_aware_negatives(*level) for level in levels], device, repeats)
    selected = sum(boundary_aware_negatives(*level).num_selected for level in levels)
    error_share = float((predictions != labels).float().mean())
    return {
        "scale": scale, "device": device_name(device), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "python": platform.python_version(), "repeats": repeats,
        "batch": setting["batch"], "image": list(setting["image"]), "classes": setting["classes"],
        "level_sizes": [list(level[0].shape[-2:]) for level in levels],
        "edt_masks_per_step": sum(len(mask) for mask in masks), "error_share": round(error_share, 3),
        "bane_selected_per_step": selected, "distance_transform_ms": 1000 * edt_seconds,
        "bane_ms": 1000 * bane_seconds, "command": " ".join(["python", *sys.argv]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="demo", choices=sorted(SCALES))
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (0 = torch's default)")
    parser.add_argument("--error-rate", type=float, default=0.2, help="share of mispredicted pixels, in blobs")
    parser.add_argument("--out", type=Path, help="JSON file (default benchmarks/results/contextrast_bane_<scale>_"
                                                 "<device>.json)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = measure(args.scale, torch.device(args.device), args.repeats, args.error_rate)
    print(f"{result['scale']}: batch {result['batch']}, {result['image']} px, levels {result['level_sizes']}, "
          f"{result['classes']} classes, {result['error_share']:.0%} of pixels wrong, {result['device']}")
    print(f"  distance transform: {result['distance_transform_ms']:.1f} ms per step "
          f"({result['edt_masks_per_step']} class-wise masks over the levels)")
    print(f"  BANE (masks + EDT + selection): {result['bane_ms']:.1f} ms per step, "
          f"{result['bane_selected_per_step']} hard negatives")
    out = args.out or Path(__file__).parent / "results" / f"contextrast_bane_{args.scale}_{args.device}.json"
    write_result(result, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
