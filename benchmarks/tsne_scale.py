"""Benchmark: seconds for a t-SNE map of N pixel embeddings with ``contrastseg.viz.tsne_2d``'s settings, with and
without its PCA step, side by side.

The points are drawn from a seeded class-structured Gaussian mixture (``--classes`` centres in D dimensions, unit
noise around each, L2-normalised like the pixel embeddings), or read from a run's cached pixel sample (``--embeddings``,
a ``.npz`` file of ``contrastseg.explore.cached_pixel_sample`` under a run's ``pixel_samples/``; its first N points).
The backend is ``tsne_2d``'s choice (a GPU package when one is importable and a GPU is present, else openTSNE on the
CPU) unless ``--backend`` names one.

``tsne_2d`` reduces embeddings of more than ``viz.PCA_COMPONENTS`` (50) dimensions to their first 50 principal
components before the affinities. ``--pca both`` (the default) times the map that way ("pca": the PCA step, timed
on its own as ``pca_seconds``, then the map of the 50 components) and of the embeddings as they are ("no_pca"), one
after the other on the same points; ``--pca on`` or ``--pca off`` times one of them. The record holds each under
``timings``, ``seconds`` of the first (the default of ``tsne_2d`` when both ran) and ``speedup`` (no-PCA seconds over
PCA seconds). One timed run of each: at 100,000 points a run takes minutes, not milliseconds.

Usage:
    python benchmarks/tsne_scale.py [--n 100000] [--dim 256] [--classes 19] [--embeddings FILE]
        [--backend auto|opentsne|cuml|tsnecuda] [--threads N] [--n-iter 500] [--seed 0] [--pca both|on|off]
        [--out FILE]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from contrastseg import viz

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_name, write_result  # noqa: E402

BACKEND_PACKAGES = {"opentsne": "openTSNE", "cuml": "cuml", "tsnecuda": "tsnecuda"}  # for the version record
CENTRE_SPREAD = 0.5  # class centres ~ N(0, spread^2 I): two lie about spread * sqrt(2 D) apart (11 at D = 256), in
                     # units of the per-dimension noise, so every class is a separate cluster


def gaussian_mixture(num_points: int, dim: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded points around ``classes`` centres, L2-normalised. Returns points (N, D) float32, labels (N,) int64."""
    generator = np.random.default_rng(seed)
    centres = generator.normal(0.0, CENTRE_SPREAD, size=(classes, dim))
    labels = generator.integers(0, classes, size=num_points)
    points = centres[labels] + generator.normal(size=(num_points, dim))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32), labels


PCA_VARIANTS = {"on": ("pca",), "off": ("no_pca",), "both": ("pca", "no_pca")}  # --pca -> the variants timed


def time_map(points: np.ndarray, variant: str, backend: str, threads: int, n_iter: int, seed: int) -> dict:
    """Seconds of one t-SNE map: "pca" reduces the points to ``viz.PCA_COMPONENTS`` principal components first (as
    ``tsne_2d`` does by default; the step's own time is ``pca_seconds``), "no_pca" maps them as they are."""
    began = time.perf_counter()
    timing = {"pca_components": None}
    if variant == "pca":
        points = viz.principal_components(points, viz.PCA_COMPONENTS)
        timing = {"pca_components": viz.PCA_COMPONENTS, "pca_seconds": time.perf_counter() - began}
    viz.tsne_2d(points, seed=seed, n_iter=n_iter, n_jobs=threads, backend=backend, pca_components=None)
    return timing | {"seconds": time.perf_counter() - began}


def measure(points: np.ndarray, backend: str, threads: int, n_iter: int, seed: int, pca: str = "both") -> dict:
    backend = viz.tsne_backend(backend)
    timings = {variant: time_map(points, variant, backend, threads, n_iter, seed) for variant in PCA_VARIANTS[pca]}
    on_gpu = backend != "opentsne"
    record = {
        "n": len(points), "dim": points.shape[1], "seconds": next(iter(timings.values()))["seconds"],
        "timings": timings, "backend": backend,
        "gradients": viz.tsne_gradients(len(points), backend), "learning_rate": viz.tsne_learning_rate(len(points)),
        "n_iter": n_iter, "device": device_name(torch.device("cuda" if on_gpu else "cpu")),
        "threads": None if on_gpu else threads,
        "versions": {"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
                     BACKEND_PACKAGES[backend]: importlib.metadata.version(BACKEND_PACKAGES[backend])},
    }
    if len(timings) == 2:
        record["speedup"] = round(timings["no_pca"]["seconds"] / timings["pca"]["seconds"], 2)
    return record


def describe(result: dict) -> str:
    """The measurement in a few lines, the variants side by side."""
    lines = [f"t-SNE of {result['n']} x {result['dim']} points ({result['backend']}, {result['gradients']} "
             f"gradients, {result['device']}, {result['threads'] or 'GPU'} threads):"]
    for variant, timing in result["timings"].items():
        if variant == "pca":
            lines.append(f"  PCA to {timing['pca_components']} dimensions first: {timing['seconds']:.1f} s "
                         f"(of which the PCA {timing['pca_seconds']:.1f} s)")
        else:
            lines.append(f"  without PCA: {timing['seconds']:.1f} s")
    if "speedup" in result:
        lines.append(f"  speedup of the PCA step: {result['speedup']:.2f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="number of points")
    parser.add_argument("--dim", type=int, default=256, help="dimensions of the mixture's points")
    parser.add_argument("--classes", type=int, default=19, help="components of the mixture")
    parser.add_argument("--embeddings", type=Path, help="a run's cached pixel sample (.npz) instead of the mixture")
    parser.add_argument("--backend", default="auto", help="auto, " + ", ".join(viz.TSNE_BACKENDS))
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="openTSNE's n_jobs (default: every CPU)")
    parser.add_argument("--n-iter", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pca", choices=PCA_VARIANTS, default="both",
                        help="time the map with tsne_2d's PCA step (on), without it (off), or both (default)")
    parser.add_argument("--out", type=Path, help="JSON file (default benchmarks/results/tsne_scale_<n>_<backend>"
                                                 ".json)")
    args = parser.parse_args(argv)
    if args.embeddings:
        with np.load(args.embeddings) as stored:
            points = stored["embeddings"][:args.n]
        source = str(args.embeddings)
    else:
        points, _ = gaussian_mixture(args.n, args.dim, args.classes, args.seed)
        source = f"gaussian mixture: {args.classes} classes, seed {args.seed}"
    result = measure(points, args.backend, args.threads, args.n_iter, args.seed, args.pca)
    result |= {"points": source, "command": " ".join(["python", *sys.argv])}
    print(describe(result))
    out = args.out or Path(__file__).parent / "results" / f"tsne_scale_{result['n']}_{result['backend']}.json"
    write_result(result, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
