"""Feature-space metrics of Contextrast (Sung et al., CVPR 2024, supplement 5.2): how tight each class's embeddings
are and how far apart the classes lie.

With V_i the embeddings of class i, mu_i their mean and N_c the number of classes present:

* intra-class alignment ``A = (1/N_c) sum_i (1/|V_i|^2) sum_{j,k in V_i} ||v_j - v_k||_2`` (lower is better). The
  sum runs over every ordered pair, the |V_i| pairs j == k (distance 0) included, exactly as the formula is written;
  a class with a single sample contributes 0;
* inter-class uniformity ``U = (1/(N_c (N_c - 1))) sum_{i != j} ||mu_i - mu_j||_2`` (higher is better);
* neighbourhood uniformity ``U_l``: the mean over classes of the mean distance from mu_i to its l nearest other
  centroids (higher is better); l is capped at N_c - 1.

Choices where the paper is silent:

* ``normalize=True`` (the default) L2-normalises every embedding first, as the pixels are compared as unit vectors
  in the contrastive losses; the centroids are the plain means of those unit vectors (not normalised again);
* every label value present is a class: leave ignored pixels out before the call;
* ``max_per_class`` subsamples each class uniformly, without replacement, for the O(|V_i|^2) alignment term only;
  the centroids use every sample, since they cost O(N);
* distances are computed in float64, block by block (``torch.cdist``), so memory stays O(chunk_size^2).
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch


@torch.no_grad()
def feature_metrics(embeddings: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray, *, neighbours: int = 3,
                    normalize: bool = True, max_per_class: int | None = None,
                    generator: torch.Generator | None = None, chunk_size: int = 2048) -> dict:
    """Intra-class alignment, inter-class uniformity and neighbourhood uniformity of a set of embeddings.

    Args:
        embeddings: one embedding per sample (a torch tensor, on any device, or a numpy array).
        labels: the class of each sample; every value present counts as a class.
        neighbours: l of the neighbourhood uniformity, >= 1; capped at the number of classes - 1.
        normalize: L2-normalise the embeddings before anything else.
        max_per_class: if set, the alignment of a class with more samples uses a uniform subsample of this size.
        generator: random source of the subsampling (on the CPU or on the embeddings' device).
        chunk_size: rows and columns of each block of pairwise distances.

    Returns:
        ``{"alignment", "uniformity", "neighbourhood_uniformity": float, "num_classes": int, "num_samples": int}``;
        ``num_samples`` counts the samples of the alignment term, after subsampling. With a single class both
        uniformities are NaN.

    Shape:
        embeddings: (N, D) float; labels: (N,) int.
    """
    embeddings = torch.as_tensor(embeddings)
    labels = torch.as_tensor(labels, device=embeddings.device)
    if embeddings.dim() != 2:
        raise ValueError(f"embeddings must have shape (N, D), got {tuple(embeddings.shape)}")
    if embeddings.is_complex() or embeddings.dtype == torch.bool:
        raise ValueError(f"embeddings must be real numbers, got dtype {embeddings.dtype}")
    if labels.dim() != 1 or labels.shape[0] != embeddings.shape[0]:
        raise ValueError(f"labels must have shape (N,) = ({embeddings.shape[0]},), got {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    if embeddings.shape[0] == 0:
        raise ValueError("embeddings is empty: no sample to measure")
    if isinstance(neighbours, bool) or not isinstance(neighbours, numbers.Integral) or neighbours < 1:
        raise ValueError(f"neighbours must be an integer >= 1, got {neighbours!r}")
    if max_per_class is not None and (isinstance(max_per_class, bool) or not isinstance(max_per_class, numbers.Integral)
                                      or max_per_class < 1):
        raise ValueError(f"max_per_class must be None or an integer >= 1, got {max_per_class!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")

    embeddings = embeddings.detach().double()
    if normalize:
        embeddings = torch.nn.functional.normalize(embeddings, dim=1)
    classes, class_of_sample = torch.unique(labels, return_inverse=True)
    num_classes = len(classes)
    centroids = _class_means(embeddings, class_of_sample, num_classes)

    kept = torch.arange(len(labels), device=labels.device)
    if max_per_class is not None:
        kept = _subsample_per_class(class_of_sample, max_per_class, generator)
    order = kept[torch.argsort(class_of_sample[kept], stable=True)]  # kept samples grouped by class
    sizes = torch.bincount(class_of_sample[kept], minlength=num_classes).tolist()
    per_class_alignment = [_mean_pairwise_distance(group, chunk_size)
                           for group in torch.split(embeddings[order], sizes)]

    uniformity = neighbourhood_uniformity = math.nan
    if num_classes > 1:
        centroid_distances = torch.cdist(centroids, centroids, compute_mode="donot_use_mm_for_euclid_dist")
        off_diagonal = ~torch.eye(num_classes, dtype=torch.bool, device=centroids.device)
        uniformity = float(centroid_distances[off_diagonal].mean())
        nearest = centroid_distances.masked_fill(~off_diagonal, math.inf).topk(
            min(neighbours, num_classes - 1), dim=1, largest=False).values  # (N_c, l)
        neighbourhood_uniformity = float(nearest.mean())
    return {
        "alignment": sum(per_class_alignment) / num_classes,
        "uniformity": uniformity,
        "neighbourhood_uniformity": neighbourhood_uniformity,
        "num_classes": num_classes,
        "num_samples": len(kept),
    }



def _class_means(embeddings: torch.Tensor, class_of_sample: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean embedding of each class, by a scatter.

    Shape:
        embeddings: (N, D); class_of_sample: (N,) int64 in [0, num_classes), every class present.
        returns: (num_classes, D).
    """
    sums = embeddings.new_zeros(num_classes, embeddings.shape[1]).index_add_(0, class_of_sample, embeddings)
    counts = torch.bincount(class_of_sample, minlength=num_classes).to(embeddings.dtype)
    return sums / counts[:, None]


def _subsample_per_class(class_of_sample: torch.Tensor, max_per_class: int,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """Indices of at most ``max_per_class`` samples of each class, drawn uniformly without replacement.

    Each sample gets a random key; a sample is kept when fewer than ``max_per_class`` samples of its class have a
    smaller key. Classes with at most ``max_per_class`` samples are kept whole.

    Shape:
        class_of_sample: (N,) int64 -> (M,) int64 indices in increasing order, M <= N.
    """
    key_device = generator.device if generator is not None else class_of_sample.device
    keys = torch.rand(len(class_of_sample), generator=generator, device=key_device).to(class_of_sample.device)
    by_key = torch.argsort(keys)
    order = by_key[torch.argsort(class_of_sample[by_key], stable=True)]  # grouped by class, random within a class
    sorted_classes = class_of_sample[order]
    position = torch.arange(len(order), device=order.device)
    is_first_of_class = torch.ones_like(sorted_classes, dtype=torch.bool)
    is_first_of_class[1:] = sorted_classes[1:] != sorted_classes[:-1]
    class_start = torch.cummax(torch.where(is_first_of_class, position, 0), dim=0).values
    return order[position - class_start < max_per_class].sort().values


def _mean_pairwise_distance(points: torch.Tensor, chunk_size: int = 2048) -> float:
    """Mean Euclidean distance over all ordered pairs of points, pairs of a point with itself included.

    Computed block by block over the upper triangle of the distance matrix (each off-diagonal block counts twice),
    so memory stays O(chunk_size²). The self-distances are set to exactly 0.

    Shape:
        points: (n, D), n >= 1.
    """
    count = points.shape[0]
    total = points.new_zeros(())
    for row_start in range(0, count, chunk_size):
        rows = points[row_start:row_start + chunk_size]
        for column_start in range(row_start, count, chunk_size):
            block = torch.cdist(rows, points[column_start:column_start + chunk_size])
            if column_start == row_start:
                total += block.fill_diagonal_(0).sum()
            else:
                total += 2 * block.sum()
    return float(total) / count**2
