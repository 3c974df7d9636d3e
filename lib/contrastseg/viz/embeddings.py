"""Pixel embeddings for the t-SNE figures and the explorer: class-balanced pixel samples read from a model's feature
maps (``sample_pixels``), leave-one-out k-NN accuracy of a sample (``knn_accuracy``), and 2-D t-SNE maps of any size
on the CPU (openTSNE) or a GPU (cuML, tsnecuda) (``tsne_2d``).

Before its affinities, ``tsne_2d`` reduces embeddings of more than ``PCA_COMPONENTS`` (50) dimensions to their first
50 principal components (``principal_components``), the usual practice of openTSNE's and FIt-SNE's authors: the
nearest-neighbour search that the affinities need costs time in proportion to the dimension, and the components
past the 50th of a pixel embedding hold little but noise. ``pca_components=None`` maps the embeddings as they are.
The reduction is deterministic (an eigendecomposition of the scatter matrix, each component's sign fixed), so a map
stays the same for a seed.

The maps are drawn by ``contrastseg.viz.plots.plot_embedding``.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from contrastseg.extras import import_notebooks_package

EMBEDDING_OUTPUTS = ("decoder", "backbone", "embedding")


@dataclass(frozen=True)
class PixelSample:
    """Pixel embeddings read from a model's feature maps, each with the image pixel it stands for.

    Attributes:
        embeddings: (N, D) float32, L2-normalised.
        labels: (N,) int64, the ground-truth class of each pixel.
        image_index: (N,) int64, the index in the data set of the image each pixel comes from.
        pixel: (N, 2) int64, (row, column) in that image of the pixel whose label the point carries: the
            nearest-neighbour source of its feature-map cell.
    """

    embeddings: np.ndarray
    labels: np.ndarray
    image_index: np.ndarray
    pixel: np.ndarray

    def class_counts(self, num_classes: int) -> np.ndarray:
        """Points per class. Shape: (num_classes,) int64."""
        return np.bincount(self.labels, minlength=num_classes)


def feature_map(model: torch.nn.Module, image: torch.Tensor, output: str = "decoder",
                device: str | torch.device = "cpu") -> torch.Tensor:
    """One image's feature map, on the CPU.

    Args:
        output: "decoder" (the head's features; for a mask-classification model, its per-pixel mask embeddings,
            the pixel decoder's output that the queries' mask embeddings are read against), "backbone" (the
            backbone's last level) or "embedding" (the projection head's, for the contrastive methods on a dense
            head; a mask-classification model has none).

    Shape:
        image: (3, H, W) -> (D, h, w) float32.
    """
    from contrastseg.models import MaskClassificationSegmentor

    if output not in EMBEDDING_OUTPUTS:
        raise ValueError(f"unknown output {output!r}; valid outputs: {', '.join(EMBEDDING_OUTPUTS)}")
    if isinstance(model, MaskClassificationSegmentor):
        if output == "embedding":
            raise ValueError("a mask-classification model has no 'embedding' output (no projection head); its "
                             "'decoder' output is the per-pixel mask embedding")
        outputs = model(image.unsqueeze(0).to(device))
        return (outputs["levels"][-1] if output == "backbone" else outputs["pixel_features"])[0].float().cpu()
    outputs = model(image.unsqueeze(0).to(device), with_embedding=output == "embedding")
    if output == "embedding" and "embedding" not in outputs:
        raise ValueError("the model has no 'embedding' output: only the contrastive methods have a projection head")
    return (outputs["levels"][-1] if output == "backbone" else outputs[output])[0].float().cpu()


def nearest_source_pixels(image_size: tuple[int, int], grid_size: tuple[int, int]) -> torch.Tensor:
    """For each cell of a (h, w) grid, the flat index of the image pixel that nearest-neighbour resizing reads.

    ``label.flatten()[nearest_source_pixels(label.shape, (h, w))]`` equals ``F.interpolate(label, (h, w),
    mode="nearest")``, flattened. Shape: -> (h * w,) int64 in [0, H * W).
    """
    height, width = image_size
    flat_index = torch.arange(height * width, dtype=torch.float64).view(1, 1, height, width)
    return F.interpolate(flat_index, size=tuple(grid_size), mode="nearest").flatten().long()


@torch.no_grad()
def sample_pixels(model: torch.nn.Module, dataset, *, output: str = "decoder", per_class: int = 100,
                  images: Sequence[int] | None = None, ignore_index: int = 255, seed: int = 0,
                  device: str | torch.device = "cpu") -> PixelSample:
    """Class-balanced sample of pixel embeddings from a model's feature maps over some images of a data set.

    Labels are taken at the feature map's resolution by nearest-neighbour sampling; ignored pixels are never drawn.
    Each class gives at most ``per_class`` pixels, drawn without replacement with a seeded generator over the
    pixels of every image together, so two models with feature maps of the same size give the same pixels.

    Memory stays at the labels of every pixel plus the N drawn embeddings, whatever the number of images: a first
    pass reads the labels at the feature maps' resolution (running the model once per distinct image size, to learn
    that resolution), the draw picks pixels, and a second pass runs the model on the images that hold picked pixels.

    Args:
        output: one of ``EMBEDDING_OUTPUTS`` (see ``feature_map``).
        images: indices into ``dataset`` (default: every image).

    Raises:
        IndexError: for an image index outside the data set; ValueError: when the images hold no labelled pixel.
    """
    model.eval()
    images = list(range(len(dataset))) if images is None else [int(index) for index in images]
    for index in images:
        check_image_index(index, len(dataset))
    grid_sizes, sources, labels = {}, [], []  # grid_sizes: image (H, W) -> its feature map's (h, w)
    for index in images:
        image, label = dataset[index]
        image_size = tuple(label.shape[-2:])
        if image_size not in grid_sizes:
            grid_sizes[image_size] = tuple(feature_map(model, image, output, device).shape[-2:])
        sources.append(nearest_source_pixels(image_size, grid_sizes[image_size]))
        labels.append(label.flatten()[sources[-1]])
    starts = torch.tensor([0] + [len(source) for source in sources]).cumsum(0)  # (len(images) + 1,)
    labels = torch.cat(labels)
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for cls in labels.unique():
        if cls == ignore_index:
            continue
        where = (labels == cls).nonzero().squeeze(1)
        chosen.append(where[torch.randperm(len(where), generator=generator)[:per_class]])
    if not chosen:
        raise ValueError(f"the {len(images)} images hold no labelled pixel (every label is {ignore_index})")
    chosen = torch.cat(chosen).sort().values
    position = torch.searchsorted(starts, chosen, right=True) - 1  # which of ``images`` each chosen pixel is in
    embeddings, pixels = [], []
    for image_position in position.unique().tolist():
        image, label = dataset[images[image_position]]
        cells = chosen[position == image_position] - starts[image_position]
        embeddings.append(feature_map(model, image, output, device).flatten(1).T[cells])
        source = sources[image_position][cells]
        pixels.append(torch.stack([source // label.shape[-1], source % label.shape[-1]], dim=1))
    return PixelSample(embeddings=F.normalize(torch.cat(embeddings), dim=1).numpy(), labels=labels[chosen].numpy(),
                       image_index=torch.tensor(images)[position].numpy(), pixel=torch.cat(pixels).numpy())


def sample_pixel_embeddings(model: torch.nn.Module, dataset, *, output: str = "decoder", per_class: int = 100,
                            num_images: int = 16, ignore_index: int = 255, seed: int = 0,
                            device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """``sample_pixels`` over the first ``num_images`` images, as arrays.

    Returns:
        embeddings (N, D) float32, L2-normalised; labels (N,) int64.
    """
    sample = sample_pixels(model, dataset, output=output, per_class=per_class,
                           images=range(min(num_images, len(dataset))), ignore_index=ignore_index, seed=seed,
                           device=device)
    return sample.embeddings, sample.labels


def check_image_index(index: int, length: int) -> None:
    """Raise an IndexError that names the valid range when ``index`` is not an image of a data set of ``length``."""
    if not 0 <= index < length:
        raise IndexError(f"image index {index} is out of range: the data set has {length} images (0 to {length - 1})")


def knn_accuracy(embeddings: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    """Leave-one-out k-nearest-neighbour accuracy under cosine similarity (majority vote, ties to the nearest).

    Shape: embeddings (N, D) L2-normalised, labels (N,).
    """
    x = torch.from_numpy(np.asarray(embeddings, dtype=np.float32))
    similarity = x @ x.T
    similarity.fill_diagonal_(-float("inf"))
    neighbours = torch.from_numpy(np.asarray(labels))[similarity.topk(k, dim=1).indices]  # (N, k), nearest first
    votes = F.one_hot(neighbours, int(neighbours.max()) + 1).float()  # (N, k, C)
    predicted = (votes.sum(1) + 1e-3 * votes[:, 0]).argmax(1)  # the nearest neighbour breaks ties
    return float((predicted == torch.from_numpy(np.asarray(labels))).float().mean())


TSNE_BACKENDS = ("opentsne", "cuml", "tsnecuda")
"""Where ``tsne_2d`` runs: openTSNE on the CPU, or a GPU package (cuML's TSNE, tsnecuda) when one is importable."""
GPU_TSNE_MODULES = {"cuml": "cuml", "tsnecuda": "tsnecuda"}  # backend -> the module it needs
EARLY_EXAGGERATION = 12.0
FFT_MIN_POINTS = 10_000  # openTSNE's own switch: below it Barnes-Hut is faster (the FFT grid costs ~20 s on a CPU)
PCA_COMPONENTS = 50
"""``tsne_2d`` maps embeddings of more dimensions from their first this many principal components."""


def tsne_backend(requested: str = "auto") -> str:
    """The backend ``tsne_2d`` uses: ``requested``, or for "auto" the first GPU package of ``GPU_TSNE_MODULES`` that
    is importable when torch sees a GPU, else "opentsne".

    Raises:
        ValueError: for an unknown name, or a GPU backend whose package or GPU is missing.
    """
    if requested == "auto":
        if torch.cuda.is_available():
            for backend, module in GPU_TSNE_MODULES.items():
                if importlib.util.find_spec(module) is not None:
                    return backend
        return "opentsne"
    if requested not in TSNE_BACKENDS:
        raise ValueError(f"unknown t-SNE backend {requested!r}; valid names: auto, {', '.join(TSNE_BACKENDS)}")
    module = GPU_TSNE_MODULES.get(requested)
    if module is not None and (importlib.util.find_spec(module) is None or not torch.cuda.is_available()):
        raise ValueError(f"the t-SNE backend {requested!r} needs the {module} package and a GPU")
    return requested


def tsne_learning_rate(num_points: int) -> float:
    """N / 12 (the early exaggeration), at least 200: Belkina et al. (2019), openTSNE's advice for large N."""
    return max(200.0, num_points / EARLY_EXAGGERATION)


def tsne_gradients(num_points: int, backend: str) -> str:
    """How ``tsne_2d`` computes the repulsive forces: "fft" (FIt-SNE interpolation) or "bh" (Barnes-Hut)."""
    return "fft" if backend != "opentsne" or num_points >= FFT_MIN_POINTS else "bh"


def tsne_2d(embeddings: np.ndarray, *, seed: int = 0, perplexity: float = 30.0, n_iter: int = 500,
            n_jobs: int | None = None, backend: str = "auto",
            pca_components: int | None = PCA_COMPONENTS) -> np.ndarray:
    """t-SNE map to 2-D, deterministic for a seed on the CPU. Shape: (N, D) -> (N, 2) float64.

    Settings for any N, up to millions of points: embeddings of more than ``pca_components`` dimensions reduced to
    that many principal components first (``principal_components``), FFT-interpolated gradients (FIt-SNE;
    Barnes-Hut below ``FFT_MIN_POINTS`` points on the CPU, see ``tsne_gradients``), PCA initialisation, the
    learning rate ``tsne_learning_rate(N)``, early exaggeration 12 for the first ``min(250, n_iter // 2)``
    iterations. The perplexity is lowered to (N - 1) / 3 for tiny N.

    Args:
        n_jobs: CPU threads of openTSNE (default: every CPU).
        backend: "auto" (``tsne_backend``) or one of ``TSNE_BACKENDS``.
        pca_components: the dimension above which the embeddings are reduced, and the one they are reduced to
            (default ``PCA_COMPONENTS``); None or 0: no reduction.

    Raises:
        ImportError: the "opentsne" backend without openTSNE, a package of the notebooks extra
            (``contrastseg.extras``).
    """
    points = np.ascontiguousarray(embeddings, dtype=np.float64)
    if pca_components and points.shape[1] > pca_components:
        points = np.ascontiguousarray(principal_components(points, pca_components))
    perplexity = min(perplexity, max(2.0, (len(points) - 1) / 3))
    early_iterations = min(250, n_iter // 2)
    learning_rate = tsne_learning_rate(len(points))
    backend = tsne_backend(backend)
    if backend == "cuml":
        from cuml.manifold import TSNE

        tsne = TSNE(n_components=2, perplexity=perplexity, early_exaggeration=EARLY_EXAGGERATION,
                    exaggeration_iter=early_iterations, learning_rate=learning_rate, learning_rate_method=None,
                    max_iter=n_iter, init="pca", method="fft", random_state=seed, output_type="numpy")
        return np.asarray(tsne.fit_transform(points.astype(np.float32)), dtype=np.float64)
    if backend == "tsnecuda":
        from tsnecuda import TSNE

        tsne = TSNE(n_components=2, perplexity=perplexity, early_exaggeration=EARLY_EXAGGERATION,
                    force_magnify_iters=early_iterations, learning_rate=learning_rate, n_iter=n_iter,
                    num_neighbors=max(32, int(3 * perplexity)))  # tsnecuda asks for at least 3 x perplexity
        initial = np.asfortranarray(pca_initialisation(points), dtype=np.float32)  # tsnecuda's own init is random
        return np.asarray(tsne.fit_transform(points.astype(np.float32), initial), dtype=np.float64)
    TSNE = import_notebooks_package("openTSNE", "tsne_2d on the CPU").TSNE
    tsne = TSNE(n_components=2, perplexity=perplexity, n_iter=n_iter, early_exaggeration=EARLY_EXAGGERATION,
                early_exaggeration_iter=early_iterations, learning_rate=learning_rate, initialization="pca",
                negative_gradient_method=tsne_gradients(len(points), backend), random_state=seed,
                n_jobs=n_jobs or os.cpu_count() or 1)
    return np.asarray(tsne.fit(points))


def principal_components(points: np.ndarray, num_components: int) -> np.ndarray:
    """The centred points projected on their first ``num_components`` principal directions, each direction signed
    so that its largest loading is positive. Shape: (N, D) -> (N, min(num_components, D)) float64.

    The directions are the eigenvectors of the (D, D) scatter matrix, in float64: for N >> D one matrix product and
    a small eigendecomposition, several times faster than an SVD of the (N, D) points (1.9 s against 15 s at
    20,000 x 256 on a loaded 2-core CPU). Fixing the signs makes the result the same wherever it is computed.
    """
    centred = np.asarray(points, dtype=np.float64) - np.mean(points, axis=0, dtype=np.float64)
    _, vectors = np.linalg.eigh(centred.T @ centred)  # (D, D), columns by ascending variance
    directions = vectors[:, ::-1][:, :num_components].T  # (k, D), largest variance first
    signs = np.sign(directions[np.arange(len(directions)), np.abs(directions).argmax(1)])
    return centred @ (directions * signs[:, None]).T


def pca_initialisation(points: np.ndarray) -> np.ndarray:
    """The first two principal components, scaled to a standard deviation of 1e-4 on the first (openTSNE's "pca"
    initialisation). Shape: (N, D) -> (N, 2)."""
    projected = principal_components(points, 2)
    return projected / projected[:, 0].std() * 1e-4
