"""Anchor sampling for pixel contrast: segmentation-aware hard anchors (Wang et al., ICCV 2021) and a uniform baseline.

The samplers pick pixels of an embedding map and return their flat indices (into the ``B * h * w`` pixels), under
``no_grad``; ``gather_pixels`` turns the indices into embedding rows that keep their gradient. Labels are taken at
the embedding resolution with ``downsample_labels`` (nearest, as the reference does).

Per-device budget. Like the reference, a call samples from the batch it is given, i.e. the per-device (per-GPU) batch
of one forward pass: ``max_samples`` and ``max_views`` are per device. Under DDP with 2 images per GPU the budget of
1024 anchors is shared by those 2 images; the same budget on one device with 8 images gives each image 4x fewer
anchors.

Vectorisation. No Python loop over images or classes: each pixel gets a group id ((image, class) pair, hard or easy),
each group a quota, and ``sample_within_groups`` draws every group's quota at once (uniform keys, the smallest
``quota`` keys of each group win).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AnchorSample:
    """Pixels chosen as anchors.

    Attributes:
        indices: flat pixel indices into the ``B * h * w`` pixels of the embedding map (image-major, row-major).
        labels: ground-truth class of each anchor.
        is_hard: whether the prediction at the anchor differs from its class.
        views_per_pair: anchors per (image, class) pair; every pair has exactly this many in hard-anchor sampling,
            0 where the count varies (random sampling).
        num_pairs: number of (image, class) pairs that contributed anchors (eligible pairs in hard-anchor sampling).

    Shape:
        indices: (N,) int64; labels: (N,) int64; is_hard: (N,) bool.
    """

    indices: torch.Tensor
    labels: torch.Tensor
    is_hard: torch.Tensor
    views_per_pair: int
    num_pairs: int

    @property
    def num_anchors(self) -> int:
        return self.indices.numel()

    @classmethod
    def empty(cls, device: torch.device | str | None = None, num_pairs: int = 0) -> "AnchorSample":
        """A sample without anchors (nothing eligible); ``num_pairs`` may still be > 0 when the budget is below 1."""
        no_index = torch.zeros(0, dtype=torch.int64, device=device)
        return cls(no_index, no_index.clone(), torch.zeros(0, dtype=torch.bool, device=device), 0, num_pairs)


def downsample_labels(labels: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Labels at the embedding resolution by nearest neighbour (the reference's rule; no majority vote).

    For an integer factor f this is strided slicing ``labels[:, ::f, ::f]``; the ignore value survives unchanged.

    Shape:
        labels: (B, H, W) int -> (B, h, w) int64 with (h, w) = ``size``.
    """
    size = tuple(int(s) for s in size)
    if labels.dim() != 3:
        raise ValueError(f"labels must be (B, H, W), got {tuple(labels.shape)}")
    if tuple(labels.shape[-2:]) == size:
        return labels.long()
    # nearest on float like the reference; float32 is exact for label values below 2**24
    return F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long()


def gather_pixels(embeddings: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Embedding rows of the given flat pixel indices; differentiable with respect to ``embeddings``.

    Shape:
        embeddings: (B, D, h, w); indices: (N,) int64 into the ``B * h * w`` pixels -> (N, D).
    """
    batch, dim, height, width = embeddings.shape
    image, position = indices.div(height * width, rounding_mode="floor"), indices.remainder(height * width)
    return embeddings.reshape(batch, dim, height * width)[image, :, position]


def random_permutation(count: int, device: torch.device, generator: torch.Generator | None = None) -> torch.Tensor:
    """``torch.randperm`` drawn from ``generator`` (on its own device) and moved to ``device``; None = global RNG."""
    if generator is None:
        return torch.randperm(count, device=device)
    return torch.randperm(count, generator=generator, device=generator.device).to(device)


def uniform_keys(count: int, device: torch.device, generator: torch.Generator | None = None) -> torch.Tensor:
    """``count`` float64 uniform [0, 1) keys from ``generator`` (on its own device), moved to ``device``."""
    if generator is None:
        return torch.rand(count, dtype=torch.float64, device=device)
    return torch.rand(count, dtype=torch.float64, generator=generator, device=generator.device).to(device)


def candidate_rates(quota: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """Per group, the fraction of elements kept as candidates before sorting (1.0 = all, 0.0 = none).

    The expected number of candidates is ``quota + 5 sqrt(quota + 1) + 10``, several standard deviations above the
    quota, so a group rarely has fewer candidates than its quota (``sample_within_groups`` then retries it whole).
    """
    wanted = quota + 5 * torch.sqrt(quota.double() + 1) + 10
    rate = torch.clamp(wanted / sizes.clamp(min=1), max=1.0)
    rate = torch.where(quota >= sizes, 2.0, rate)  # the whole group: every key (< 1) passes
    return torch.where(quota > 0, rate, 0.0)


def sample_within_groups(groups: torch.Tensor, quota: torch.Tensor, generator: torch.Generator | None = None,
                         sizes: torch.Tensor | None = None, prefilter: bool = True) -> torch.Tensor:
    """Draw ``quota[g]`` elements of each group g uniformly without replacement (the whole group if smaller).

    Every element gets an i.i.d. uniform key and each group keeps its ``quota[g]`` smallest keys. To sort few
    elements, only keys below a per-group rate (``candidate_rates``) are sorted; a group left with fewer candidates
    than its quota is redone with all its elements, so the result is exactly the one without the prefilter.

    Args:
        groups: group id of each element, in [0, G).
        quota: elements wanted per group.
        generator: source of the keys; None uses the global RNG of ``groups``' device.
        sizes: ``bincount(groups, minlength=G)`` if already known.
        prefilter: sort only the likely candidates (same result, faster); False sorts every element of a group
            with a positive quota.

    Shape:
        groups: (n,) int64; quota: (G,) int64; sizes: (G,) int64.
        returns: (sum_g min(quota[g], sizes[g]),) int64 element indices, by group ascending, in random order within
        a group.
    """
    num_groups = quota.numel()
    if sizes is None:
        sizes = torch.bincount(groups, minlength=num_groups)
    quota = torch.minimum(quota, sizes)
    keys = uniform_keys(groups.numel(), groups.device, generator)
    rates = candidate_rates(quota, sizes) if prefilter else torch.where(quota > 0, 2.0, 0.0)
    while True:
        candidates = torch.nonzero(keys < rates[groups]).squeeze(1)
        candidate_groups = groups[candidates]
        counts = torch.bincount(candidate_groups, minlength=num_groups)
        short = counts < quota
        if not bool(short.any()):
            break
        rates = torch.where(short, 2.0, rates)
    by_key = torch.argsort(keys[candidates])
    order = by_key[torch.sort(candidate_groups[by_key], stable=True).indices]
    sorted_groups = candidate_groups[order]
    position = torch.arange(order.numel(), device=groups.device) - (counts.cumsum(0) - counts)[sorted_groups]
    return candidates[order[position < quota[sorted_groups]]]


_warned: set[str] = set()
"""The reasons for an empty hard-anchor sample already warned about in this process (each is warned once)."""


def _warn_once(reason: str, message: str) -> None:
    if reason not in _warned:
        _warned.add(reason)
        warnings.warn(message, UserWarning, stacklevel=4)  # the caller of hard_anchor_sampling


def _check_labels(labels: torch.Tensor, predictions: torch.Tensor | None = None) -> None:
    if labels.dim() != 3:
        raise ValueError(f"labels must be (B, h, w), got {tuple(labels.shape)}")
    if predictions is not None and predictions.shape != labels.shape:
        raise ValueError(f"predictions {tuple(predictions.shape)} and labels {tuple(labels.shape)} differ in shape")


def _valid_pixels(labels: torch.Tensor, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat indices and classes of the pixels whose label is not ``ignore_index``; raises on negative classes."""
    flat = labels.reshape(-1)
    pixels = torch.nonzero(flat != ignore_index).squeeze(1)
    classes = flat[pixels].long()
    if classes.numel() and int(classes.min()) < 0:
        raise ValueError(f"negative label values other than ignore_index={ignore_index}")
    return pixels, classes


@torch.no_grad()
def hard_anchor_sampling(labels: torch.Tensor, predictions: torch.Tensor, max_samples: int = 1024,
                         max_views: int = 100, ignore_index: int = 255,
                         generator: torch.Generator | None = None) -> AnchorSample:
    """Segmentation-aware hard anchor sampling, as in the reference (``_hard_anchor_sampling``), vectorised.

    1. Eligible pairs: the (image, class) pairs whose class (not ``ignore_index``) has **more than** ``max_views``
       pixels in that image. T = number of eligible pairs in the batch.
    2. Views per pair: ``n = min(max_samples // T, max_views)``; the budget is shared by all pairs of the batch.
    3. Per pair (b, c): hard = pixels with label c predicted as another class, easy = label c predicted as c. If both
       have at least n/2 pixels: ``n // 2`` hard and the rest easy; else if only the hard set has: all easy ones and
       hard ones up to n; else all hard ones and easy ones up to n. Uniform without replacement.

    The budget is per call, i.e. per forward pass on one device: under DDP with 2 images per GPU, ``max_samples``
    anchors are shared by those 2 images (the reference's setting); on one device with 8 images by all 8.

    Embedding size and ``max_views``. A class takes part in an image only with at least ``max_views + 1`` pixels at
    the embedding resolution: on an h x w embedding with C classes of about equal area that needs
    ``h * w / C > max_views`` (the reference's 100 needs more than 500 pixels per image for 5 classes, e.g. a
    23 x 23 embedding; a 16 x 16 one gives about 51 per class and no anchor at all). Each pair then gets
    ``min(max_samples // T, max_views)`` anchors, so ``max_samples`` below T gives none either. An empty sample
    makes the contrast term 0; it is warned about once per process (``warnings.warn``), for each of the two causes,
    unless the batch has no labelled pixel at all.

    Differences from the reference: T = 0 gives an empty sample instead of a crash; the random draws come from
    ``generator`` (one uniform key per pixel) instead of one ``randperm`` per set.

    Args:
        labels: ground truth at the embedding resolution (see ``downsample_labels``).
        predictions: argmax of the un-upsampled logits, same resolution.
        max_samples: anchor budget of the call (S).
        max_views: cap of anchors per pair, and the eligibility threshold (V_max): a pair needs more than
            ``max_views`` pixels.
        ignore_index: label value never sampled.
        generator: source of randomness; None uses the global RNG of the labels' device.

    Shape:
        labels: (B, h, w) int64; predictions: (B, h, w) int64.
        returns: ``AnchorSample`` with N = T * n anchors, ordered pair by pair (image-major, classes ascending),
        hard anchors first within a pair, so ``indices.view(num_pairs, views_per_pair)`` groups them by pair.
    """
    _check_labels(labels, predictions)
    device = labels.device
    batch = labels.shape[0]
    flat_labels = labels.reshape(batch, -1).long()
    valid = flat_labels != ignore_index
    if labels.numel() == 0:
        return AnchorSample.empty(device)
    smallest, largest = torch.stack(torch.aminmax(torch.where(valid, flat_labels, 0))).tolist()
    if smallest < 0:
        raise ValueError(f"negative label values other than ignore_index={ignore_index}")
    num_classes = largest + 1
    # group per pixel: 2 * (image * K + class) for hard pixels, + 1 for easy ones; ignored pixels: the spare 2 * B * K
    is_easy = predictions.reshape(batch, -1) == flat_labels
    groups = (torch.arange(batch, device=device)[:, None] * num_classes + flat_labels) * 2 + is_easy
    groups = torch.where(valid, groups, 2 * batch * num_classes).reshape(-1)
    sizes = torch.bincount(groups, minlength=2 * batch * num_classes + 1)
    hard_count, easy_count = sizes[:-1].view(-1, 2).unbind(1)
    pair_sizes = hard_count + easy_count
    eligible = pair_sizes > max_views
    num_pairs = int(eligible.sum())
    if num_pairs == 0:
        largest_pair = int(pair_sizes.max())
        if largest_pair > 0:
            _warn_once("no_eligible_pair", (
                f"hard_anchor_sampling drew no anchor: with max_views={max_views} a class needs more than "
                f"{max_views} pixels in an image at the embedding resolution {tuple(labels.shape[-2:])}, and the "
                f"largest (image, class) pair has {largest_pair}; the contrast term is 0 for such batches. Lower "
                f"max_views (or raise the resolution). Warned once per process."))
        return AnchorSample.empty(device)
    views = min(max_samples // num_pairs, max_views)
    if views == 0:
        _warn_once("budget_below_one_view", (
            f"hard_anchor_sampling drew no anchor: max_samples={max_samples} is smaller than the {num_pairs} "
            f"eligible (image, class) pairs, so each would get max_samples // pairs = 0 views; the contrast term is "
            f"0 for such batches. Raise max_samples. Warned once per process."))
        return AnchorSample.empty(device, num_pairs)

    hard_enough, easy_enough = 2 * hard_count >= views, 2 * easy_count >= views  # ">= n / 2"
    hard_quota = torch.where(hard_enough & easy_enough, views // 2,
                             torch.where(hard_enough, views - easy_count, hard_count))
    quota = torch.where(eligible[:, None], torch.stack([hard_quota, views - hard_quota], dim=1), 0).view(-1)
    quota = torch.cat([quota, quota.new_zeros(1)])  # the spare group of ignored pixels
    indices = sample_within_groups(groups, quota, generator, sizes)
    anchor_labels = flat_labels.reshape(-1)[indices]
    return AnchorSample(indices, anchor_labels, predictions.reshape(-1)[indices] != anchor_labels, views, num_pairs)


@torch.no_grad()
def random_anchor_sampling(labels: torch.Tensor, max_samples: int = 1024, ignore_index: int = 255,
                           generator: torch.Generator | None = None,
                           predictions: torch.Tensor | None = None) -> AnchorSample:
    """Uniform anchors: ``min(max_samples, #labelled pixels)`` pixels without replacement, ignoring the classes.

    The "random" row of the anchor-sampling comparison. The budget is per call (per device), as in
    ``hard_anchor_sampling``. ``is_hard`` is filled from ``predictions`` when given, else all False.

    Shape:
        labels: (B, h, w) int64; predictions: (B, h, w) int64 or None.
        returns: ``AnchorSample`` with indices ascending, ``views_per_pair = 0`` (varies) and ``num_pairs`` = number of
        (image, class) pairs hit.
    """
    _check_labels(labels, predictions)
    device = labels.device
    pixels, classes = _valid_pixels(labels, ignore_index)
    count = min(max_samples, pixels.numel())
    if count == 0:
        return AnchorSample.empty(device)
    chosen = random_permutation(pixels.numel(), device, generator)[:count].sort().values
    pixels, classes = pixels[chosen], classes[chosen]
    is_hard = (predictions.reshape(-1)[pixels] != classes if predictions is not None
               else torch.zeros_like(classes, dtype=torch.bool))
    height, width = labels.shape[-2:]
    pairs = pixels.div(height * width, rounding_mode="floor") * (int(classes.max()) + 1) + classes
    return AnchorSample(pixels, classes, is_hard, 0, int(torch.unique(pairs).numel()))


@torch.no_grad()
def class_balanced_sampling(labels: torch.Tensor, max_total: int = 10000, max_per_class: int = 2500,
                            min_per_class: int = 5, ignore_index: int = 255,
                            generator: torch.Generator | None = None) -> AnchorSample:
    """Uniform pixels per class over the whole batch, with a cap per class and in total (Contextrast).

    Classes with fewer than ``min_per_class`` labelled pixels are dropped. Each of the C remaining classes gets
    ``min(count, max_per_class, max_total // C)`` pixels drawn uniformly without replacement, so the total never
    exceeds ``max_total`` and the budget is shared equally by the classes before the per-class cap (the rule of the
    multi-scale contrastive code of Pissas et al. that Contextrast builds on: ``max_views_per_class``,
    ``max_features_total``, ``min_views_per_class``).

    Shape:
        labels: (B, h, w) int64 at the embedding resolution.
        returns: ``AnchorSample`` ordered by class ascending (random order within a class), ``views_per_pair = 0``
        and ``num_pairs`` = C (classes, not (image, class) pairs: the sample is over the batch).
    """
    _check_labels(labels)
    for name, value in (("max_total", max_total), ("max_per_class", max_per_class), ("min_per_class", min_per_class)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    device = labels.device
    pixels, classes = _valid_pixels(labels, ignore_index)
    if pixels.numel() == 0:
        return AnchorSample.empty(device)
    sizes = torch.bincount(classes)
    kept = sizes >= min_per_class
    num_kept = int(kept.sum())
    if num_kept == 0:
        return AnchorSample.empty(device)
    per_class = min(max_per_class, max_total // num_kept)
    quota = torch.where(kept, sizes.clamp(max=per_class), 0)
    chosen = sample_within_groups(classes, quota, generator, sizes)
    pixels, chosen_classes = pixels[chosen], classes[chosen]
    return AnchorSample(pixels, chosen_classes, torch.zeros_like(chosen_classes, dtype=torch.bool), 0,
                        num_kept if per_class else 0)
