"""Benchmark: seconds for a t-SNE map of N pixel embeddings with ``contrastseg.viz.tsne_2d``'s settings.

The points are drawn from a seeded class-structured Gaussian mixture (``--classes`` centres in D dimensions, unit
noise around each, L2-normalised like the pixel embeddings), or read from a run's cached pixel sample (``--embeddings``,
a ``.npz`` file of ``contrastseg.explore.cached_pixel_sample`` under a run's ``pixel_samples/``; its first N points).
The backend is ``tsne_2d``'s choice (a GPU package when one is importable and a GPU is present, else openTSNE on the
CPU) unless ``--backend`` names one. One timed run: at 100,000 points a run takes minutes, not milliseconds.

Usage:
    python benchmarks/tsne_scale.py [--n 100000] [--dim 256] [--classes 19] [--embeddings FILE]
        [--backend auto|opentsne|cuml|tsnecuda] [--threads N] [--n-iter 500] [--seed 0] [--out FILE]
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


def measure(points: np.ndarray, backend: str, threads: int, n_iter: int, seed: int) -> dict:
    backend = viz.tsne_backend(backend)
    began = time.perf_counter()
    viz.tsne_2d(points, seed=seed, n_iter=n_iter, n_jobs=threads, backend=backend)
    seconds = time.perf_counter() - began
    on_gpu = backend != "opentsne"
    return {
        "n": len(points), "dim": points.shape[1], "seconds": seconds, "backend": backend,
        "gradients": viz.tsne_gradients(len(points), backend), "learning_rate": viz.tsne_learning_rate(len(points)),
        "n_iter": n_iter, "device": device_name(torch.device("cuda" if on_gpu else "cpu")),
        "threads": None if on_gpu else threads,
        "versions": {"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
                     BACKEND_PACKAGES[backend]: importlib.metadata.version(BACKEND_PACKAGES[backend])},
    }


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
    result = measure(points, args.backend, args.threads, args.n_iter, args.seed)
    result |= {"points": source, "command": " ".join(["python", *sys.argv])}
    print(f"t-SNE of {result['n']} x {result['dim']} points ({result['backend']}, {result['gradients']} gradients, "
          f"{result['device']}, {result['threads'] or 'GPU'} threads): {result['seconds']:.1f} s")
    out = args.out or Path(__file__).parent / "results" / f"tsne_scale_{result['n']}_{result['backend']}.json"
    write_result(result, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
