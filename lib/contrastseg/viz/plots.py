"""Figures for the notebooks and the explorer: predictions beside ground truth, per-class IoU bars, scatter maps of
2-D embeddings, BANE's error rims and hard negatives, RC²L's regions.

Every plotting function returns a matplotlib Figure and never calls ``plt.show``; notebooks display it and
``contrastseg.results.save_figure`` writes it for the report. The embeddings that ``plot_embedding`` maps are
sampled and projected to 2-D in ``contrastseg.viz.embeddings``.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.patches import Patch

from contrastseg.extras import import_notebooks_package

IGNORE_COLOUR = (0, 0, 0)
HIDDEN_COLOUR = (0.85, 0.85, 0.85)  # points of the classes not highlighted
RASTERIZED_POINTS = 20_000
"""Above this many points, ``plot_embedding``'s scatter is drawn as an image in vector files (PDF, SVG): a file of
N vector dots grows with N (at 100,000 points 14 MB of SVG and 1.8 MB of PDF, against 0.8 and 0.55 MB with the
dots as an image at 300 dpi); at 20,000 the two forms of a PDF are about the same size. PNGs are images anyway and do
not change."""


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
    """Bars of IoU per class, one colour per run name. ``per_class_iou``: name -> list of K values (None = absent).

    Drawn with seaborn, from the notebooks extra (``contrastseg.extras``).
    """
    sns = import_notebooks_package("seaborn", "plot_per_class_iou")
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


ROW_BAR_COLOUR = "#8fb3d9"
JITTER_SEED = 0


def plot_rows(per_seed: pd.DataFrame, metrics: dict[str, str] | None = None) -> plt.Figure:
    """The figure of a table notebook: per row, a bar of the mean over seeds (error bar: the standard deviation) with
    each seed as a dot, one panel per metric.

    The dots' horizontal jitter is drawn from a generator seeded with ``JITTER_SEED`` (seaborn draws it from numpy's
    global stream, which is restored afterwards), so the same table gives the same picture on every run.
    Drawn with seaborn, from the notebooks extra (``contrastseg.extras``).

    Args:
        per_seed: one line per (row, seed), with a "row" column and a column per metric (``tables.train_rows``).
        metrics: column -> axis label, one panel each, in order; default ``{"miou": "val mIoU"}``.
    """
    sns = import_notebooks_package("seaborn", "plot_rows")
    metrics = metrics or {"miou": "val mIoU"}
    rows = per_seed["row"].nunique()
    fig, axes = plt.subplots(1, len(metrics), figsize=(1.2 + (0.3 + 1.0 * rows) * len(metrics), 3.2), squeeze=False)
    global_stream = np.random.get_state()
    np.random.seed(JITTER_SEED)
    try:
        for ax, (metric, label) in zip(axes[0], metrics.items()):
            sns.barplot(per_seed, x="row", y=metric, errorbar="sd", ax=ax, color=ROW_BAR_COLOUR)
            sns.stripplot(per_seed, x="row", y=metric, ax=ax, color="black", size=4)
            ax.set_xlabel("")
            ax.set_ylabel(label)
            ax.tick_params(axis="x", rotation=30)
            for tick in ax.get_xticklabels():
                tick.set_horizontalalignment("right")
    finally:
        np.random.set_state(global_stream)
    sns.despine(fig)
    fig.tight_layout()
    return fig


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
    ax.scatter(points[order, 0], points[order, 1], c=colours[order], s=size, linewidths=0,
               rasterized=len(points) > RASTERIZED_POINTS)  # in a PDF or SVG, an image instead of N vector dots
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
