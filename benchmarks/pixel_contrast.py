"""Benchmark: our pixel-contrast memory path against a per-class Python-loop implementation of the reference algorithm.

Two parts, each timed for both implementations:

* ``step``: one training step of the memory variant without the network: hard anchor sampling, building the contrast
  set from the memory, loss forward + backward (into the embeddings), memory update. "ours" is
  ``contrastseg.samplers.hard_anchor_sampling`` + ``contrastseg.methods.pixel_contrast.memory.ClassMemory`` (a segment and a pixel memory)
  + ``contrastseg.losses.PixelContrastLoss``; "reference_loop" is ``benchmarks/reference_loop.py``.
* ``loss``: the loss alone (forward + backward) on identical random anchors and memory rows (``time_loss_only``).

Scales: ``paper`` = 2 images of 128x256 embeddings (1/4 of 1024x512), D = 256, 19 classes, 5000 segment + 5000 pixel
rows per class (190,000 memory rows), max_samples 1024, max_views 100 (988 anchors); ``cpu`` = the same at 64x128
with 500 + 500 rows per class (19,000 memory rows). The 720-channel backbone features and the projection head are
upstream of all this and identical for both, so they are left out.

What is measured: wall time per step (median over ``--repeats`` after one warm-up; ``torch.cuda.synchronize`` around
each phase on GPU) and peak memory. On GPU the peak is ``torch.cuda.max_memory_allocated`` during the steps minus what
was allocated before them. On CPU it is the process's peak resident set size during the steps (``VmHWM`` after
resetting it through ``/proc/self/clear_refs``) minus its resident set size before them; every (part,
implementation) runs in a fresh subprocess so that nothing else is counted.

Correctness check: the two losses are evaluated on the same anchors (sampled once by the loop sampler) and the same
memory rows; values and anchor gradients must agree to 1e-5.

Usage:
    python benchmarks/pixel_contrast.py --scale {cpu,paper} [--device cpu|cuda] [--repeats N] [--out FILE]
        [--loss-only] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_name, write_result  # noqa: E402
from reference_loop import LoopClassMemory, dense_memory_loss, hard_anchor_sampling_loop  # noqa: E402

from contrastseg.methods.pixel_contrast.loss import PixelContrastLoss  # noqa: E402

SCALES = {
    "paper": dict(batch=2, height=128, width=256, num_classes=19, memory_size=5000, dim=256, max_samples=1024,
                  max_views=100, pixels_per_update=10),
    "cpu": dict(batch=2, height=64, width=128, num_classes=19, memory_size=500, dim=256, max_samples=1024,
                max_views=100, pixels_per_update=10),
}
TEMPERATURE, BASE_TEMPERATURE = 0.1, 0.07
IGNORE_INDEX = 255
IMPLEMENTATIONS = ("ours", "reference_loop")
TOLERANCE = 1e-5


def import_vectorised():
    """The vectorised sampler and memory bank of "ours"; a clear ImportError while they do not exist."""
    try:
        from contrastseg.methods.pixel_contrast.memory import PixelSegmentMemory
        from contrastseg.samplers import gather_pixels, hard_anchor_sampling
    except ImportError as error:
        raise ImportError(
            "the full pixel-contrast benchmark needs contrastseg.samplers and contrastseg.methods.pixel_contrast.memory, which cannot be "
            f"imported ({error}); run with --loss-only to benchmark the loss alone") from error
    return hard_anchor_sampling, gather_pixels, PixelSegmentMemory


class PhaseTimer:
    """Wall time of consecutive phases, synchronising the GPU at each mark."""

    def __init__(self, device: torch.device):
        self.device = device
        self.phases: dict[str, float] = {}
        self._sync()
        self._last = time.perf_counter()

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def mark(self, phase: str) -> None:
        self._sync()
        now = time.perf_counter()
        self.phases[phase] = (now - self._last) * 1000
        self._last = now


def make_scene(scale: dict, device: torch.device, seed: int = 0) -> dict:
    """Unit-norm embeddings (a leaf with grad), blocky labels with every class present and an ignored block, and
    predictions that disagree with the labels on about 30% of the pixels.

    Shape: embeddings (B, D, h, w); labels, predictions (B, h, w) int64.
    """
    generator = torch.Generator().manual_seed(seed)
    batch, height, width, classes = scale["batch"], scale["height"], scale["width"], scale["num_classes"]
    block = height // 8
    grid = (height // block, width // block)
    labels = []
    for _ in range(batch):
        cells = torch.arange(grid[0] * grid[1]) % classes
        cells = cells[torch.randperm(len(cells), generator=generator)].view(grid)
        cells[0, 0] = IGNORE_INDEX
        labels.append(cells.repeat_interleave(block, 0).repeat_interleave(block, 1))
    labels = torch.stack(labels)
    wrong = torch.rand(labels.shape, generator=generator) < 0.3
    predictions = torch.where(wrong, torch.randint(0, classes, labels.shape, generator=generator), labels)
    embeddings = F.normalize(torch.randn(batch, scale["dim"], height, width, generator=generator), dim=1)
    return {"embeddings": embeddings.to(device).requires_grad_(), "labels": labels.to(device),
            "predictions": predictions.to(device)}


def build_step(implementation: str, scale: dict, scene: dict, device: torch.device):
    """A function running one step and returning its phase times in ms, plus the number of anchors/memory rows."""
    embeddings, labels, predictions = scene["embeddings"], scene["labels"], scene["predictions"]
    classes, dim, size = scale["num_classes"], scale["dim"], scale["memory_size"]
    sizes = {}

    if implementation == "ours":
        hard_anchor_sampling, gather_pixels, PixelSegmentMemory = import_vectorised()
        memory = PixelSegmentMemory(classes, dim, size, kinds="both", pixels_per_update=scale["pixels_per_update"])
        generator = torch.Generator().manual_seed(1)
        for queue in memory.memories.values():
            fill_with_random_rows(queue, generator)
        memory = memory.to(device)
        loss_fn = PixelContrastLoss(TEMPERATURE, BASE_TEMPERATURE)

        def step() -> dict[str, float]:
            embeddings.grad = None
            timer = PhaseTimer(device)
            sample = hard_anchor_sampling(labels, predictions, scale["max_samples"], scale["max_views"],
                                          ignore_index=IGNORE_INDEX)
            anchors = gather_pixels(embeddings, sample.indices)
            timer.mark("sample")
            rows, row_labels = memory.contents()
            loss_fn(anchors, sample.labels, rows, row_labels).backward()
            timer.mark("loss")
            memory.update(embeddings.detach(), labels)
            timer.mark("update")
            sizes.update(anchors=len(anchors), memory_rows=len(rows))
            return timer.phases

    elif implementation == "reference_loop":
        memory = LoopClassMemory(classes, dim, size, scale["pixels_per_update"], IGNORE_INDEX, device)

        def step() -> dict[str, float]:
            embeddings.grad = None
            timer = PhaseTimer(device)
            anchors, anchor_labels = hard_anchor_sampling_loop(embeddings, labels, predictions, scale["max_samples"],
                                                               scale["max_views"], IGNORE_INDEX)
            timer.mark("sample")
            rows, row_labels = memory.contents()
            dense_memory_loss(anchors, anchor_labels, rows, row_labels, TEMPERATURE, BASE_TEMPERATURE).backward()
            timer.mark("loss")
            memory.update(embeddings.detach(), labels)
            timer.mark("update")
            sizes.update(anchors=len(anchors), memory_rows=len(rows))
            return timer.phases
    else:
        raise ValueError(f"unknown implementation {implementation!r}; choose from {IMPLEMENTATIONS}")
    return step, sizes


@torch.no_grad()
def fill_with_random_rows(memory, generator: torch.Generator) -> None:
    """Every slot of a ``ClassMemory`` a random unit vector and marked filled, as the reference initialises its queues,
    so that both implementations contrast against all K x 2 x size rows from the first step."""
    memory.queue.copy_(F.normalize(torch.randn(memory.queue.shape, generator=generator), dim=2))
    memory.filled.fill_(memory.size)


def random_loss_inputs(num_anchors: int, num_classes: int, rows_per_class: int, dim: int, device: torch.device,
                       seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Unit-norm anchors (leaf with grad) and memory rows with labels, ``rows_per_class`` rows of each class."""
    generator = torch.Generator().manual_seed(seed)
    anchors = F.normalize(torch.randn(num_anchors, dim, generator=generator), dim=1)
    anchor_labels = torch.randint(0, num_classes, (num_anchors,), generator=generator)
    rows = F.normalize(torch.randn(num_classes * rows_per_class, dim, generator=generator), dim=1)
    row_labels = torch.arange(num_classes).repeat_interleave(rows_per_class)
    return (anchors.to(device).requires_grad_(), anchor_labels.to(device), rows.to(device), row_labels.to(device))


def build_loss_step(implementation: str, inputs: tuple[torch.Tensor, ...], device: torch.device,
                    chunk_size: int | None = None):
    """A function running the loss forward + backward once, returning ``{"loss": ms}``."""
    anchors, anchor_labels, rows, row_labels = inputs
    if implementation == "ours":
        loss_fn = PixelContrastLoss(TEMPERATURE, BASE_TEMPERATURE, chunk_size=chunk_size)
    elif implementation == "reference_loop":
        def loss_fn(*args):
            return dense_memory_loss(*args, TEMPERATURE, BASE_TEMPERATURE)
    else:
        raise ValueError(f"unknown implementation {implementation!r}; choose from {IMPLEMENTATIONS}")

    def step() -> dict[str, float]:
        anchors.grad = None
        timer = PhaseTimer(device)
        loss_fn(anchors, anchor_labels, rows, row_labels).backward()
        timer.mark("loss")
        return timer.phases

    return step


def compare_losses(anchors, anchor_labels, rows, row_labels, chunk_size: int | None = None) -> dict:
    """Both losses on identical inputs: value and anchor-gradient differences (max absolute)."""
    results = {}
    for implementation in IMPLEMENTATIONS:
        leaf = anchors.detach().clone().requires_grad_()
        if implementation == "ours":
            value = PixelContrastLoss(TEMPERATURE, BASE_TEMPERATURE, chunk_size=chunk_size)(leaf, anchor_labels,
                                                                                           rows, row_labels)
        else:
            value = dense_memory_loss(leaf, anchor_labels, rows, row_labels, TEMPERATURE, BASE_TEMPERATURE)
        value.backward()
        results[implementation] = (value.item(), leaf.grad)
    (ours, ours_grad), (reference, reference_grad) = results["ours"], results["reference_loop"]
    return {"ours": ours, "reference_loop": reference, "max_abs_difference": abs(ours - reference),
            "max_grad_difference": float((ours_grad - reference_grad).abs().max()) if len(anchors) else 0.0,
            "anchors": len(anchors), "memory_rows": len(rows)}


def measure(step, repeats: int, device: torch.device) -> dict:
    """Median phase times over ``repeats`` runs after one warm-up, and the peak memory increase (see module doc)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device)
    else:
        baseline = reset_peak_rss()
    step()
    runs = [step() for _ in range(repeats)]
    if device.type == "cuda":
        peak_mb = (torch.cuda.max_memory_allocated(device) - baseline) / 2**20
    else:
        peak_mb = (peak_rss() - baseline) / 2**20
    phases = {phase: statistics.median(run[phase] for run in runs) for phase in runs[0]}
    return {"time_ms": statistics.median(sum(run.values()) for run in runs), "phases_ms": phases,
            "peak_mb": peak_mb}


def _proc_status_bytes(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_peak_rss() -> int:
    """Reset the process's peak resident set size (Linux ``clear_refs``) and return the current RSS in bytes.

    Where that is impossible, return the peak so far (``ru_maxrss``): the increase is then measured from it.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _proc_status_bytes("VmRSS")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def peak_rss() -> int:
    """Peak resident set size in bytes since the last reset (``VmHWM``; ``ru_maxrss`` where unavailable)."""
    peak = _proc_status_bytes("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def loss_sizes(scale: dict) -> tuple[int, int]:
    """Anchors and memory rows per class of the scale: T = B x K pairs, n = min(max_samples // T, max_views)."""
    pairs = scale["batch"] * scale["num_classes"]
    return pairs * min(scale["max_samples"] // pairs, scale["max_views"]), 2 * scale["memory_size"]


def time_loss_only(num_anchors: int = 988, num_classes: int = 19, rows_per_class: int = 1000, dim: int = 256,
                   repeats: int = 3, device: str = "cpu", chunk_size: int | None = None, seed: int = 0) -> dict:
    """Time our loss and the dense loop reference on identical random anchors and memory rows, in this process.

    Returns ``{"rows": [{"implementation", "time_ms", "peak_mb", "time_ratio"}...], "max_abs_difference",
    "max_grad_difference", ...}``. ``peak_mb`` is measured on CUDA only (None on CPU, where the peak RSS of one
    process cannot be attributed to one of two implementations; the command line runs each in its own process).
    """
    device = torch.device(device)
    inputs = random_loss_inputs(num_anchors, num_classes, rows_per_class, dim, device, seed)
    check = compare_losses(*inputs, chunk_size=chunk_size)
    rows = []
    for implementation in IMPLEMENTATIONS:
        result = measure(build_loss_step(implementation, inputs, device, chunk_size), repeats, device)
        rows.append({"implementation": implementation, "time_ms": result["time_ms"],
                     "peak_mb": result["peak_mb"] if device.type == "cuda" else None})
    for row in rows:
        row["time_ratio"] = row["time_ms"] / rows[0]["time_ms"]
    return {"rows": rows, **check}


def run_worker(args: argparse.Namespace) -> dict:
    """One (part, implementation) in this (fresh) process."""
    device = torch.device(args.device)
    scale = SCALES[args.scale]
    torch.manual_seed(args.seed)
    if args.part == "step":
        step, sizes = build_step(args.worker, scale, make_scene(scale, device, args.seed), device)
    else:
        num_anchors, rows_per_class = loss_sizes(scale)
        inputs = random_loss_inputs(num_anchors, scale["num_classes"], rows_per_class, scale["dim"], device,
                                    args.seed)
        step = build_loss_step(args.worker, inputs, device)
        sizes = {"anchors": num_anchors, "memory_rows": len(inputs[2])}
    result = measure(step, args.repeats, device)
    return {"part": args.part, "implementation": args.worker, **result, **sizes}


def run_in_subprocess(args: argparse.Namespace, part: str, implementation: str) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--scale", args.scale, "--device", args.device,
               "--repeats", str(args.repeats), "--seed", str(args.seed), "--worker", implementation, "--part", part]
    if args.threads:
        command += ["--threads", str(args.threads)]
    finished = subprocess.run(command, capture_output=True, text=True)
    if finished.returncode != 0:
        raise RuntimeError(f"{part}/{implementation} failed:\n{finished.stderr}")
    return json.loads(finished.stdout.strip().splitlines()[-1])


def equality_check(args: argparse.Namespace) -> dict:
    """The two losses on the same sampled anchors and the same memory rows, at the benchmark's scale."""
    device = torch.device(args.device)
    scale = SCALES[args.scale]
    torch.manual_seed(args.seed)
    scene = make_scene(scale, device, args.seed)
    anchors, anchor_labels = hard_anchor_sampling_loop(scene["embeddings"].detach(), scene["labels"],
                                                       scene["predictions"], scale["max_samples"],
                                                       scale["max_views"], IGNORE_INDEX)
    memory = LoopClassMemory(scale["num_classes"], scale["dim"], scale["memory_size"], scale["pixels_per_update"],
                             IGNORE_INDEX, device)
    memory.update(scene["embeddings"].detach(), scene["labels"])
    return compare_losses(anchors, anchor_labels, *memory.contents())


def format_table(rows: list[dict]) -> str:
    header = (f"{'part':<6} {'implementation':<16} {'time ms':>10} {'sample':>9} {'loss':>9} {'update':>9} "
              f"{'peak MB':>9} {'time x':>7} {'peak x':>7}")
    lines = [header, "-" * len(header)]
    for row in rows:
        phases = row["phases_ms"]
        cells = [f"{phases[phase]:9.1f}" if phase in phases else f"{'':9}" for phase in ("sample", "loss", "update")]
        lines.append(f"{row['part']:<6} {row['implementation']:<16} {row['time_ms']:10.1f} {' '.join(cells)} "
                     f"{row['peak_mb']:9.1f} {row['time_ratio']:7.2f} {row['peak_ratio']:7.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if available")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs after one warm-up (median reported)")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON file (default benchmarks/results/pixel_contrast_<device>.json)")
    parser.add_argument("--loss-only", action="store_true", help="only the loss part (no sampler/memory needed)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in every process")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", choices=IMPLEMENTATIONS, help=argparse.SUPPRESS)
    parser.add_argument("--part", choices=["step", "loss"], default="step", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(run_worker(args)))
        return

    parts = ["loss"] if args.loss_only else ["step", "loss"]
    if not args.loss_only:
        import_vectorised()
    check = equality_check(args)
    if not (check["max_abs_difference"] <= TOLERANCE and check["max_grad_difference"] <= TOLERANCE):
        raise AssertionError(f"the two losses disagree beyond {TOLERANCE}: {check}")
    rows = []
    for part in parts:
        part_rows = [run_in_subprocess(args, part, implementation) for implementation in IMPLEMENTATIONS]
        for row in part_rows:
            row["time_ratio"] = row["time_ms"] / part_rows[0]["time_ms"]
            row["peak_ratio"] = row["peak_mb"] / part_rows[0]["peak_mb"] if part_rows[0]["peak_mb"] > 0 else 0.0
        rows += part_rows

    device = torch.device(args.device)
    peak_kind = ("cuda max_memory_allocated increase" if device.type == "cuda"
                 else "peak RSS increase (VmHWM after clear_refs, minus RSS before)")
    print(f"pixel contrast, scale {args.scale}: {SCALES[args.scale]}")
    print(f"device {device_name(device)}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"median of {args.repeats} after 1 warm-up; peak = {peak_kind}; x = ratio to ours")
    print(format_table(rows))
    print(f"check on identical anchors/memory ({check['anchors']} x {check['memory_rows']}): "
          f"ours {check['ours']:.7f}, reference_loop {check['reference_loop']:.7f}, "
          f"|diff| {check['max_abs_difference']:.2e}, grad |diff| {check['max_grad_difference']:.2e}")

    out = args.out or Path(__file__).resolve().parent / "results" / f"pixel_contrast_{args.device}.json"
    write_result({
        "device": device_name(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]), "scale": args.scale,
        "scale_config": SCALES[args.scale], "repeats": args.repeats, "peak_memory": peak_kind,
        "check": check, "rows": rows}, out)


if __name__ == "__main__":
    main()
