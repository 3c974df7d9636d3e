"""Plots for the notebooks: predictions beside ground truth, per-class IoU bars, t-SNE maps of pixel embeddings,
BANE's error rims and hard negatives.

Every plotting function returns a matplotlib Figure and never calls ``plt.show``; notebooks display it and
``contrastseg.results.save_figure`` writes it for the report.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
import torch.nn.functional as F
from matplotlib.patches import Patch

IGNORE_COLOUR = (0, 0, 0)
HIDDEN_COLOUR = (0.85, 0.85, 0.85)  # points of the classes not highlighted


def colorize(labels: np.ndarray | torch.Tensor, palette, ignore_index: int = 255) -> np.ndarray:
    """Class map to RGB. Shape: labels (H, W) int -> (H, W, 3) uint8; ``ignore_index`` is black."""
    labels = np.asarray(labels)
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: len(palette)] = np.asarray(palette, dtype=np.uint8)
    lut[ignore_index] = IGNORE_COLOUR
    return lut[labels]


def class_legend(class_names, palette) -> list[Patch]:
    handles = [Patch(color=np.asarray(colour) / 255, label=name) for name, colour in zip(class_names, palette)]
    return handles + [Patch(color=np.asarray(IGNORE_COLOUR) / 255, label="ignore")]


def show_predictions(images: torch.Tensor, labels: torch.Tensor, predictions: dict[str, torch.Tensor],
                     class_names, palette, ignore_index: int = 255) -> plt.Figure:
    """A grid: one row per image; columns image, ground truth, then one column per named prediction.

    Shape:
        images: (B, 3, H, W) float in [0, 1]; labels: (B, H, W); predictions: name -> (B, H, W).
    """
    columns = ["image", "ground truth", *predictions]
    rows = images.shape[0]
    fig, axes = plt.subplots(rows, len(columns), figsize=(2.2 * len(columns) + 1.6, 2.2 * rows), squeeze=False)
    for row in range(rows):
        panels = [images[row].permute(1, 2, 0).clamp(0, 1).cpu().numpy(),
                  colorize(labels[row].cpu(), palette, ignore_index)]
        panels += [colorize(pred[row].cpu(), palette, ignore_index) for pred in predictions.values()]
        for ax, panel, title in zip(axes[row], panels, columns):
            ax.imshow(panel, interpolation="nearest")
            ax.set_axis_off()
            if row == 0:
                ax.set_title(title, fontsize=9)
    fig.legend(handles=class_legend(class_names, palette), loc="center right", fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1 - 1.5 / fig.get_figwidth(), 1))
    return fig


def plot_per_class_iou(per_class_iou: dict[str, list], class_names) -> plt.Figure:
    """Bars of IoU per class, one colour per run name. ``per_class_iou``: name -> list of K values (None = absent)."""
    rows = [{"class": name, "run": run, "IoU": value}
            for run, values in per_class_iou.items() for name, value in zip(class_names, values) if value is not None]
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * len(class_names) * max(1, len(per_class_iou) / 2), 3.2))
    sns.barplot(pd.DataFrame(rows), x="class", y="IoU", hue="run", ax=ax)
    ax.set_ylim(0, 1)
    ax.set_xlabel("")
    ax.tick_params(axis="x", rotation=30)
    ax.legend(fontsize=8, frameon=False)
    sns.despine(fig)
    fig.tight_layout()
    return fig


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
            n_jobs: int | None = None, backend: str = "auto") -> np.ndarray:
    """t-SNE map to 2-D, deterministic for a seed on the CPU. Shape: (N, D) -> (N, 2) float64.

    Settings for any N, up to millions of points: FFT-interpolated gradients (FIt-SNE; Barnes-Hut below
    ``FFT_MIN_POINTS`` points on the CPU, see ``tsne_gradients``), PCA initialisation, the learning rate
    ``tsne_learning_rate(N)``, early exaggeration 12 for the first ``min(250, n_iter // 2)`` iterations. The
    perplexity is lowered to (N - 1) / 3 for tiny N.

    Args:
        n_jobs: CPU threads of openTSNE (default: every CPU).
        backend: "auto" (``tsne_backend``) or one of ``TSNE_BACKENDS``.
    """
    points = np.ascontiguousarray(embeddings, dtype=np.float64)
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
    from openTSNE import TSNE

    tsne = TSNE(n_components=2, perplexity=perplexity, n_iter=n_iter, early_exaggeration=EARLY_EXAGGERATION,
                early_exaggeration_iter=early_iterations, learning_rate=learning_rate, initialization="pca",
                negative_gradient_method=tsne_gradients(len(points), backend), random_state=seed,
                n_jobs=n_jobs or os.cpu_count() or 1)
    return np.asarray(tsne.fit(points))


def pca_initialisation(points: np.ndarray) -> np.ndarray:
    """The first two principal components, scaled to a standard deviation of 1e-4 on the first (openTSNE's "pca"
    initialisation). Shape: (N, D) -> (N, 2)."""
    centred = points - points.mean(0)
    _, _, directions = np.linalg.svd(centred, full_matrices=False)
    projected = centred @ directions[:2].T
    return projected / projected[:, 0].std() * 1e-4


def plot_embedding(points: np.ndarray, labels: np.ndarray, class_names, palette, *, title: str = "",
                   ax: plt.Axes | None = None, highlight: int | None = None, marked: int | None = None) -> plt.Figure:
    """Scatter of a 2-D map coloured by class. Shape: points (N, 2), labels (N,).

    Args:
        highlight: a class whose points keep their colour, drawn on top; the others turn light grey.
        marked: the index of one point to ring in black (a clicked point).
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(4.2, 4.0))
    colours = np.asarray(palette, dtype=float)[labels] / 255
    order = np.arange(len(points))
    if highlight is not None:
        chosen = labels == highlight
        colours[~chosen] = HIDDEN_COLOUR
        order = np.concatenate([order[~chosen], order[chosen]])  # the highlighted class on top
    size = float(np.clip(2000 / max(len(points), 1), 4, 25))  # 4 from 500 points on, larger for a few
    ax.scatter(points[order, 0], points[order, 1], c=colours[order], s=size, linewidths=0)
    if marked is not None:
        ax.scatter(*points[marked], s=8 * size, facecolors="none", edgecolors="black", linewidths=1.5)
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    present = sorted(set(labels.tolist()))
    ax.legend(handles=[class_legend(class_names, palette)[c] for c in present], fontsize=7, frameon=False,
              loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.figure.tight_layout()
    return ax.figure


def show_boundary_negatives(images: torch.Tensor, labels: torch.Tensor, predictions: torch.Tensor, sample,
                            class_names, palette, ignore_index: int = 255) -> plt.Figure:
    """What BANE sees, one row per image: image, ground truth, prediction, error rims, selected hard negatives.

    The rim panel shows, on the error pixels (ground truth != prediction), their distance to the rim of their
    class's error region (dark = on the rim); the last panel marks the selected pixels over the image, coloured by the
    class whose anchor they are a hard negative for. Labels, predictions and the sample are at the level's resolution
    (nearest); the image is shown at its own.

    Shape:
        images: (B, 3, H, W) float in [0, 1]; labels, predictions: (B, h, w) int; sample: ``BaneSample`` (B, h, w).
    """
    columns = ["image", "ground truth", "prediction", "error rim distance", "BANE hard negatives"]
    rows = images.shape[0]
    fig, axes = plt.subplots(rows, len(columns), figsize=(2.2 * len(columns) + 1.6, 2.2 * rows), squeeze=False)
    height, width = images.shape[-2:]
    extent = (0, width, height, 0)  # level-resolution panels drawn over the image's pixel grid
    distance = sample.distance.cpu().numpy()
    finite_max = float(np.nanmax(np.where(np.isfinite(distance) & (distance > 0), distance, np.nan), initial=1.0))
    for row in range(rows):
        picture = images[row].permute(1, 2, 0).clamp(0, 1).cpu().numpy()
        is_error = (labels[row] != ignore_index) & (predictions[row] != labels[row])
        rim = np.ma.masked_where(~is_error.cpu().numpy(), distance[row])
        negatives = colorize(sample.negative_for[row].clamp(min=0).cpu(), palette, ignore_index).astype(float) / 255
        overlay = np.concatenate([negatives, sample.selected[row].cpu().numpy()[..., None].astype(float)], axis=2)
        ax_image, ax_truth, ax_pred, ax_rim, ax_bane = axes[row]
        ax_image.imshow(picture)
        ax_truth.imshow(colorize(labels[row].cpu(), palette, ignore_index), interpolation="nearest", extent=extent)
        ax_pred.imshow(colorize(predictions[row].cpu(), palette, ignore_index), interpolation="nearest",
                       extent=extent)
        rim_image = ax_rim.imshow(rim, cmap="viridis", vmin=1, vmax=max(finite_max, 1.0), interpolation="nearest",
                                  extent=extent)
        ax_bane.imshow(picture * 0.45)
        ax_bane.imshow(overlay, interpolation="nearest", extent=extent)
        for ax, title in zip(axes[row], columns):
            ax.set_axis_off()
            if row == 0:
                ax.set_title(title, fontsize=9)
    fig.legend(handles=class_legend(class_names, palette), loc="center right", fontsize=8, frameon=False)
    fig.subplots_adjust(right=1 - 1.7 / fig.get_figwidth(), bottom=0.12, wspace=0.05, hspace=0.08)
    below = axes[-1, 3].get_position()
    colorbar_axes = fig.add_axes((below.x0, below.y0 - 0.06, below.width, 0.02))
    fig.colorbar(rim_image, cax=colorbar_axes, orientation="horizontal")
    colorbar_axes.tick_params(labelsize=7)
    colorbar_axes.set_xlabel("px to the rim (level grid)", fontsize=7)
    return fig


def region_map(masks: torch.Tensor, classes: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Paint region masks into one label map by their classes; pixels in no region get ``ignore_index``.

    Where regions overlap, the later one wins. Shape: masks (T, h, w) bool, classes (T,) int -> (h, w) int64.
    """
    painted = torch.full(masks.shape[-2:], ignore_index, dtype=torch.long)
    for mask, value in zip(masks.cpu(), classes.cpu()):
        painted[mask] = int(value)
    return painted


def show_regions(images: torch.Tensor, strong: torch.Tensor, labels: torch.Tensor, regions: list[dict],
                 class_names, palette, ignore_index: int = 255) -> plt.Figure:
    """RC²L's regions, one row per unlabeled image: weak view, strong view, teacher regions (by their pseudo-class),
    the student's matched regions (by the class the student itself predicts for them), and the ground truth, which
    training never saw (shown to judge the pseudo-regions). Black: no region (or ignored).

    Shape:
        images, strong: (B, 3, H, W) float in [0, 1]; labels: (B, H, W) int; regions: ``inspect_regions``' list.
    """
    columns = ["weak view (teacher)", "strong view (student)", "teacher regions", "matched student regions",
               "ground truth (unused)"]
    rows = images.shape[0]
    fig, axes = plt.subplots(rows, len(columns), figsize=(2.2 * len(columns) + 1.6, 2.2 * rows), squeeze=False)
    height, width = images.shape[-2:]
    extent = (0, width, height, 0)
    for row, found in enumerate(regions):
        teacher = region_map(found["teacher_masks"], found["teacher_classes"], ignore_index)
        student = region_map(found["student_masks"], found["student_classes"], ignore_index)
        panels = [images[row].permute(1, 2, 0).clamp(0, 1).cpu().numpy(),
                  strong[row].permute(1, 2, 0).clamp(0, 1).cpu().numpy(),
                  colorize(teacher, palette, ignore_index), colorize(student, palette, ignore_index),
                  colorize(labels[row].cpu(), palette, ignore_index)]
        for column, (ax, panel) in enumerate(zip(axes[row], panels)):
            ax.imshow(panel, interpolation="nearest", extent=extent if column in (2, 3) else None)
            ax.set_axis_off()
            if row == 0:
                ax.set_title(columns[column], fontsize=9)
        axes[row, 2].text(2, height - 3, f"{len(found['teacher_classes'])} regions", fontsize=7, color="black",
                          backgroundcolor="white")
    fig.legend(handles=class_legend(class_names, palette), loc="center right", fontsize=8, frameon=False)
    fig.subplots_adjust(right=1 - 1.7 / fig.get_figwidth(), wspace=0.05, hspace=0.08)
    return fig
