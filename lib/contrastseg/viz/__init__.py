"""Figures and embedding maps for the notebooks and the explorer, in two modules:

- ``plots``: the figures (predictions beside ground truth, per-class IoU bars, scatter maps of 2-D embeddings, BANE's
  error rims and hard negatives, RC²L's regions) and the colour helpers they share (``colorize``, ``class_legend``);
- ``embeddings``: class-balanced pixel samples of a model's feature maps, their k-NN accuracy, and 2-D t-SNE maps.

Every public name of both is available here, so ``from contrastseg import viz; viz.tsne_2d(...)`` and
``from contrastseg.viz import plot_embedding`` work without naming the module.
"""

from contrastseg.viz.embeddings import (
    EARLY_EXAGGERATION, EMBEDDING_OUTPUTS, FFT_MIN_POINTS, GPU_TSNE_MODULES, PCA_COMPONENTS, TSNE_BACKENDS,
    PixelSample, check_image_index, feature_map, knn_accuracy, nearest_source_pixels, pca_initialisation,
    principal_components, sample_pixel_embeddings, sample_pixels, tsne_2d, tsne_backend, tsne_gradients,
    tsne_learning_rate,
)
from contrastseg.viz.plots import (
    HIDDEN_COLOUR, IGNORE_COLOUR, JITTER_SEED, RASTERIZED_POINTS, ROW_BAR_COLOUR, class_legend, colorize,
    plot_embedding, plot_per_class_iou, plot_rows, region_map, show_boundary_negatives, show_predictions, show_regions,
)

__all__ = [
    "EARLY_EXAGGERATION", "EMBEDDING_OUTPUTS", "FFT_MIN_POINTS", "GPU_TSNE_MODULES", "HIDDEN_COLOUR", "IGNORE_COLOUR",
    "JITTER_SEED", "PCA_COMPONENTS", "RASTERIZED_POINTS", "ROW_BAR_COLOUR", "TSNE_BACKENDS", "check_image_index",
    "class_legend", "colorize", "feature_map", "knn_accuracy", "nearest_source_pixels", "pca_initialisation",
    "PixelSample", "plot_embedding", "plot_per_class_iou", "plot_rows", "principal_components", "region_map",
    "sample_pixel_embeddings", "sample_pixels", "show_boundary_negatives", "show_predictions", "show_regions",
    "tsne_2d", "tsne_backend", "tsne_gradients", "tsne_learning_rate",
]
