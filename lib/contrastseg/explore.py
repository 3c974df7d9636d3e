"""The run explorer (``notebooks/explore/explorer.ipynb``): what it shows, as plain functions and one class whose
methods take plain values (run names, an image index, layer switches, a class name) and return arrays, tables and
matplotlib figures. The notebook only wires ipywidgets to them, so all of it runs and is tested headless.

Pixel samples for t-SNE maps are cached per run: ``cached_pixel_sample`` writes them under the run's folder
(``RunResult.run_dir / "pixel_samples"``), one ``.npz`` file per sampled set (split, images, points per class, model
output, seed), and reads the file back instead of running the model again.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import fields
from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from contrastseg import viz
from contrastseg.config import ExperimentConfig
from contrastseg.data import dataset_info
from contrastseg.engine import predict
from contrastseg.engine.distributed import resolve_device
from contrastseg.engine.train import build_split
from contrastseg.metrics import confusion_matrix, inner_boundary, inner_contour, mean_iou
from contrastseg.registry import lookup
from contrastseg.runs import RunResult, finished_runs

SAMPLES_FOLDER = "pixel_samples"
PREDICTION_ALPHA = 0.5
BAND_COLOUR, BAND_ALPHA = (1.0, 0.9, 0.0), 0.6
ERROR_COLOUR, ERROR_ALPHA = (1.0, 0.0, 0.0), 0.7
DIMMED = 0.3  # brightness left to the pixels outside a highlighted class


def split_dataset(cfg: ExperimentConfig, split: str):
    """The images of ``split`` that a run of ``cfg`` uses: its first ``num_train`` (train) or ``num_val`` (val), or
    every image of the other splits."""
    return build_split(cfg, split, {"train": cfg.num_train, "val": cfg.num_val}.get(split, 0))


def cached_pixel_sample(result: RunResult, *, split: str = "val", images: int | Sequence[int] = 16,
                        per_class: int = 100, output: str = "decoder", seed: int = 0,
                        device: str | torch.device = "cpu") -> viz.PixelSample:
    """``viz.sample_pixels`` of a run's model, computed once and then read from the run's folder.

    Args:
        images: the first ``images`` images of the split, or a list of image indices.
        per_class, output, seed: as in ``viz.sample_pixels``.

    Returns:
        The sample; its file is ``result.run_dir / "pixel_samples" / "<split>-<output>-<digest>.npz"``, the digest
        being that of the key (split, image indices, per_class, output, seed), which the file also holds.
    """
    dataset = split_dataset(result.config, split)
    indices = list(range(min(images, len(dataset)))) if isinstance(images, int) else [int(i) for i in images]
    key = {"split": split, "images": indices, "per_class": per_class, "output": output, "seed": seed}
    text = json.dumps(key, sort_keys=True)
    path = result.run_dir / SAMPLES_FOLDER / f"{split}-{output}-{hashlib.sha256(text.encode()).hexdigest()[:16]}.npz"
    if path.is_file():
        with np.load(path) as stored:
            return viz.PixelSample(**{field.name: stored[field.name] for field in fields(viz.PixelSample)})
    sample = viz.sample_pixels(result.load_model(device), dataset, output=output, per_class=per_class, images=indices,
                               ignore_index=dataset_info(result.config.dataset).ignore_index, seed=seed,
                               device=device)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.stem}.{os.getpid()}.partial.npz")
    np.savez(partial, key=np.array(text), **{field.name: getattr(sample, field.name) for field in fields(sample)})
    os.replace(partial, path)  # a reader never sees half a file
    return sample


def error_map(predictions: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Wrongly predicted pixels; ignored pixels are never errors. Shape: (H, W) int, (H, W) int -> (H, W) bool."""
    return (predictions != labels) & (labels != ignore_index)


def class_masks(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """One mask per class. Shape: (H, W) int -> (K, H, W) bool; ignored pixels are in none."""
    return labels.unsqueeze(0) == torch.arange(num_classes, device=labels.device).view(-1, 1, 1)


def boundary_band(labels: torch.Tensor, num_classes: int, width: int) -> torch.Tensor:
    """The ground truth's boundary band, the pixels that boundary IoU scores: within ``width`` pixels of the edge
    of their class's region (``metrics.inner_boundary``); ignored pixels are in no region, so never in the band.
    Shape: (H, W) int -> (H, W) bool."""
    return inner_boundary(class_masks(labels, num_classes).unsqueeze(0), width)[0].any(0)


def paint(canvas: np.ndarray, mask: np.ndarray, colour, alpha: float) -> np.ndarray:
    """Blend ``colour`` over ``canvas`` where ``mask`` is set. Shape: canvas (H, W, 3) float in [0, 1], mask (H, W)
    bool, colour (3,) or (H, W, 3) in [0, 1] -> (H, W, 3)."""
    colour = np.broadcast_to(np.asarray(colour, dtype=float), canvas.shape)
    return np.where(mask[..., None], (1 - alpha) * canvas + alpha * colour, canvas)


def compose_overlay(image: torch.Tensor, labels: torch.Tensor, predictions: torch.Tensor | None, palette, *,
                    ground_truth: bool = True, prediction: bool = True, errors: bool = False,
                    boundary: bool = False, band_width: int = 2, highlight: int | None = None,
                    ignore_index: int = 255) -> np.ndarray:
    """The picture with the chosen layers drawn over it, bottom to top: the prediction's classes (a translucent
    fill), the ground truth (class-coloured outlines, which read over the fill), the boundary band (yellow), the
    errors (red). With ``highlight``, every pixel outside that class is dimmed.

    Args:
        predictions: None leaves out the layers that need one (prediction, errors).
        highlight: a class index.

    Shape:
        image: (3, H, W) float in [0, 1]; labels, predictions: (H, W) int -> (H, W, 3) float in [0, 1].
    """
    num_classes = len(palette)
    canvas = image.permute(1, 2, 0).clamp(0, 1).double().cpu().numpy()
    labels = labels.cpu()
    if prediction and predictions is not None:
        fill = viz.colorize(predictions.cpu(), palette, ignore_index) / 255
        canvas = paint(canvas, np.ones(labels.shape, dtype=bool), fill, PREDICTION_ALPHA)
    if ground_truth:
        outline = inner_contour(class_masks(labels, num_classes)).any(0).numpy()
        canvas = paint(canvas, outline, viz.colorize(labels, palette, ignore_index) / 255, 1.0)
    if boundary:
        canvas = paint(canvas, boundary_band(labels, num_classes, band_width).numpy(), BAND_COLOUR, BAND_ALPHA)
    if errors and predictions is not None:
        canvas = paint(canvas, error_map(predictions.cpu(), labels, ignore_index).numpy(), ERROR_COLOUR, ERROR_ALPHA)
    if highlight is not None:
        canvas = np.where((labels == highlight).numpy()[..., None], canvas, DIMMED * canvas)
    return canvas


def image_miou(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int, ignore_index: int = 255) -> float:
    """mIoU of one image (classes absent from its prediction and ground truth left out). Shape: (H, W), (H, W)."""
    return mean_iou(confusion_matrix(predictions, labels, num_classes, ignore_index))


def nearest_point(points: np.ndarray, x: float, y: float) -> int:
    """Index of the point of a 2-D map nearest to (x, y), e.g. where a click landed. Shape: points (N, 2)."""
    return int(np.argmin(((np.asarray(points) - (x, y)) ** 2).sum(1)))


class RunExplorer:
    """The images of one split seen by several runs: predictions, overlays, per-class IoU and per-image t-SNE maps.

    Models, predictions and t-SNE maps are computed when first asked for and kept; pixel samples are also cached in
    each run's folder (``cached_pixel_sample``).

    Args:
        runs: name -> finished run, all on the same data set at the same image size.
        split: the split whose images are explored.
        output: the feature map the t-SNE maps show (``viz.EMBEDDING_OUTPUTS``; for a mask-classification run,
            "decoder" is its per-pixel mask embedding, and "embedding" does not exist).
        per_class: at most this many pixels of each class in an image's t-SNE map.
        seed: seed of the pixel draw and of the t-SNE.
        device: where the models run ("auto": a GPU when torch sees one).
    """

    def __init__(self, runs: dict[str, RunResult], split: str = "val", *, output: str = "decoder",
                 per_class: int = 100, seed: int = 0, device: str = "cpu"):
        if not runs:
            raise ValueError("the explorer needs at least one run")
        first = next(iter(runs.values())).config
        mismatched = [name for name, result in runs.items()
                      if (result.config.dataset, result.config.image_size) != (first.dataset, first.image_size)]
        if mismatched:
            raise ValueError(f"runs {mismatched} are not on {first.dataset} at {first.image_size} px like the first")
        self.runs = dict(runs)
        self.split, self.output, self.per_class, self.seed = split, output, per_class, seed
        self.device = resolve_device(device)
        self.info = dataset_info(first.dataset)
        self.band_width = first.boundary_width
        self.dataset = split_dataset(first, split)
        self._models, self._predictions, self._maps = {}, {}, {}

    @property
    def num_images(self) -> int:
        """Number of images in the explored split."""
        return len(self.dataset)

    def run(self, name: str) -> RunResult:
        """The run called ``name``; an unknown name raises a ValueError listing the runs."""
        return lookup(self.runs, name, "run")

    def image(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Image ``index`` of the split: image (3, H, W) float in [0, 1], labels (H, W) int64."""
        viz.check_image_index(index, self.num_images)
        return self.dataset[index]

    def class_index(self, name: str | None) -> int | None:
        """The index of class ``name`` (None stays None); an unknown name raises a ValueError listing the classes."""
        if name is None:
            return None
        return lookup({class_name: i for i, class_name in enumerate(self.info.class_names)}, name, "class")

    def prediction(self, run: str, index: int) -> torch.Tensor:
        """Run ``run``'s predicted class per pixel of image ``index``, one forward pass. Shape: (H, W) int64."""
        if (run, index) not in self._predictions:
            if run not in self._models:
                self._models[run] = self.run(run).load_model(self.device)
            image, _ = self.image(index)
            self._predictions[run, index] = predict(self._models[run], image.unsqueeze(0).to(self.device))[0].cpu()
        return self._predictions[run, index]

    def image_figure(self, runs: Sequence[str], index: int, *, ground_truth: bool = True, prediction: bool = True,
                     errors: bool = False, boundary: bool = False, highlight: str | None = None,
                     marked_pixel: tuple[int, int] | None = None) -> plt.Figure:
        """Image ``index`` with the chosen layers (``compose_overlay``), one panel per run (one plain panel when no
        run is picked), titled with the run's mIoU on this image; ``marked_pixel`` (row, column) gets a ring."""
        image, labels = self.image(index)
        highlight = self.class_index(highlight)
        panels = {run: self.prediction(run, index) for run in runs} or {"ground truth": None}
        fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels) + 1.6, 3.0), squeeze=False)
        for ax, (name, predictions) in zip(axes[0], panels.items()):
            ax.imshow(compose_overlay(image, labels, predictions, self.info.palette, ground_truth=ground_truth,
                                      prediction=prediction, errors=errors, boundary=boundary,
                                      band_width=self.band_width, highlight=highlight,
                                      ignore_index=self.info.ignore_index), interpolation="nearest")
            if marked_pixel is not None:
                ax.scatter(marked_pixel[1], marked_pixel[0], s=120, facecolors="none", edgecolors="white",
                           linewidths=1.5)
            title = name if predictions is None else f"{name}\nimage mIoU {self.image_miou(name, index):.2f}"
            ax.set_title(title, fontsize=9)
            ax.set_axis_off()
        fig.legend(handles=viz.class_legend(self.info.class_names, self.info.palette), loc="center right", fontsize=7,
                   frameon=False)
        fig.tight_layout(rect=(0, 0, 1 - 1.4 / fig.get_figwidth(), 1))
        return fig

    def image_miou(self, run: str, index: int) -> float:
        """Run ``run``'s mIoU on image ``index`` alone (``image_miou``)."""
        _, labels = self.image(index)
        return image_miou(self.prediction(run, index), labels, self.info.num_classes, self.info.ignore_index)

    def iou_table(self, runs: Sequence[str]) -> pd.DataFrame:
        """Validation IoU per class (rows) of each run (columns), as the run store recorded it; NaN: class absent."""
        return pd.DataFrame({run: [np.nan if value is None else value
                                   for value in self.run(run).metrics["val"]["per_class_iou"]] for run in runs},
                            index=pd.Index(self.info.class_names, name="class"))

    def iou_figure(self, runs: Sequence[str]) -> plt.Figure:
        """``viz.plot_per_class_iou`` of the runs side by side."""
        return viz.plot_per_class_iou({run: self.run(run).metrics["val"]["per_class_iou"] for run in runs},
                                      self.info.class_names)

    def tsne_map(self, run: str, index: int) -> tuple[viz.PixelSample, np.ndarray]:
        """The class-balanced pixel sample of image ``index`` under run ``run`` and its t-SNE map, shape (N, 2)."""
        if (run, index) not in self._maps:
            viz.check_image_index(index, self.num_images)
            sample = cached_pixel_sample(self.run(run), split=self.split, images=[index], per_class=self.per_class,
                                         output=self.output, seed=self.seed, device=self.device)
            self._maps[run, index] = sample, viz.tsne_2d(sample.embeddings, seed=self.seed)
        return self._maps[run, index]

    def tsne_figure(self, run: str, index: int, *, highlight: str | None = None,
                    marked: int | None = None) -> plt.Figure:
        """The t-SNE map of image ``index``'s pixels under ``run``, coloured by ground-truth class; ``highlight``
        greys out the other classes, ``marked`` rings one point (``point_at``)."""
        sample, points = self.tsne_map(run, index)
        return viz.plot_embedding(points, sample.labels, self.info.class_names, self.info.palette,
                                  title=f"{run}: {self.output}, image {index}", highlight=self.class_index(highlight),
                                  marked=marked)

    def point_at(self, run: str, index: int, x: float, y: float) -> dict:
        """The point of the t-SNE map nearest to a click at (x, y): its index ("point"), class name ("class") and
        the image pixel it stands for ("pixel", (row, column))."""
        sample, points = self.tsne_map(run, index)
        point = nearest_point(points, x, y)
        return {"point": point, "class": self.info.class_names[sample.labels[point]],
                "pixel": tuple(int(v) for v in sample.pixel[point])}


def finished_runs_like(cfg: ExperimentConfig, root: str | Path | None = None) -> dict[str, RunResult]:
    """The finished runs of the store on ``cfg``'s data set and image size, by folder name (e.g. "ce-1a2b3c4d5e6f"),
    for the explorer's run picker; dense and mask-classification runs alike."""
    return {result.run_dir.name: result for result in finished_runs(root)
            if (result.config.dataset, result.config.image_size) == (cfg.dataset, cfg.image_size)}
