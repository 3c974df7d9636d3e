"""A straightforward per-class Python-loop implementation of the reference algorithm, for benchmarking only.

Written from the reference's sampler, memory update and memory loss as ``docs/methods.md#pixel-contrast`` describes
them, not copied from ``tfzhou/ContrastiveSeg``. It keeps the reference's *shape of computation*: Python loops over
images and classes (each ``unique``/``nonzero`` forcing a device sync), a dense anchors x memory loss that
materialises full (N, M) float matrices and float masks, and a per-class copy of the queues into one contrast buffer.
It does *not* keep the reference's bugs:

* the memory's pixel pointer advances by the number of rows written (not by 1) and wraps around as a ring buffer;
* class 0 is a real class (enqueued and contrasted), only ``ignore_index`` is left out; no zero rows;
* no self-exclusion mask in the anchors x memory loss;
* anchors without positives are left out of the mean (no division by zero); no anchors gives a zero, not a crash.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def hard_anchor_sampling_loop(embeddings: torch.Tensor, labels: torch.Tensor, predictions: torch.Tensor,
                              max_samples: int, max_views: int, ignore_index: int = 255,
                              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Segmentation-aware hard anchor sampling with Python loops over images and classes.

    Eligible (image, class) pairs: classes other than ``ignore_index`` with more than ``max_views`` pixels in the
    image. Each of the T pairs gives n = min(max_samples // T, max_views) anchors, half of them hard (label c,
    prediction != c) and half easy, filled up from the other set when one is short.

    Shape:
        embeddings: (B, D, h, w); labels, predictions: (B, h, w) at the embeddings' resolution.
        returns: anchors (T * n, D) (pair-major), anchor labels (T * n,).
    """
    batch, dim = embeddings.shape[:2]
    flat_embeddings = embeddings.flatten(2).transpose(1, 2)  # (B, h*w, D)
    flat_labels, flat_predictions = labels.flatten(1), predictions.flatten(1)
    pairs = []
    for image in range(batch):
        for cls in torch.unique(flat_labels[image]).tolist():
            if cls == ignore_index:
                continue
            if int((flat_labels[image] == cls).sum()) > max_views:
                pairs.append((image, cls))
    if not pairs:
        return embeddings.new_zeros(0, dim), labels.new_zeros(0)
    views = min(max_samples // len(pairs), max_views)
    anchors, anchor_labels = [], []
    for image, cls in pairs:
        is_class = flat_labels[image] == cls
        hard = torch.nonzero(is_class & (flat_predictions[image] != cls)).squeeze(1)
        easy = torch.nonzero(is_class & (flat_predictions[image] == cls)).squeeze(1)
        num_hard, num_easy = len(hard), len(easy)
        if num_hard >= views / 2 and num_easy >= views / 2:
            keep_hard = views // 2
            keep_easy = views - keep_hard
        elif num_hard >= views / 2:
            keep_easy = num_easy
            keep_hard = views - keep_easy
        else:
            keep_hard = num_hard
            keep_easy = views - keep_hard
        hard = hard[torch.randperm(num_hard, generator=generator).to(hard.device)[:keep_hard]]
        easy = easy[torch.randperm(num_easy, generator=generator).to(easy.device)[:keep_easy]]
        anchors.append(flat_embeddings[image, torch.cat([hard, easy])])
        anchor_labels.append(torch.full((views,), cls, dtype=labels.dtype, device=labels.device))
    return torch.cat(anchors), torch.cat(anchor_labels)


def dense_memory_loss(anchors: torch.Tensor, anchor_labels: torch.Tensor, memory_rows: torch.Tensor,
                      memory_labels: torch.Tensor, temperature: float = 0.1,
                      base_temperature: float = 0.07) -> torch.Tensor:
    """Anchors x memory pixel contrast, reference style: every (N, M) matrix and mask is materialised in float.

    Per positive p of anchor i: ``s_ip - log(exp(s_ip) + sum_n exp(s_in))`` with the row maximum subtracted first; the
    anchor's loss is ``-(temperature / base_temperature)`` times the mean over its positives; the mean over anchors
    with at least one positive.

    Shape:
        anchors: (N, D); anchor_labels: (N,); memory_rows: (M, D); memory_labels: (M,); returns: ().
    """
    anchors, memory_rows = anchors.float(), memory_rows.float()
    positive_mask = (anchor_labels[:, None] == memory_labels[None, :]).float()  # (N, M)
    negative_mask = 1.0 - positive_mask  # (N, M)
    logits = anchors @ memory_rows.T / temperature  # (N, M)
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()
    exp_logits = torch.exp(logits)  # (N, M)
    negative_sum = (exp_logits * negative_mask).sum(dim=1, keepdim=True)
    log_prob = logits - torch.log(exp_logits + negative_sum)  # (N, M)
    num_positives = positive_mask.sum(dim=1)
    has_positive = num_positives > 0
    if not bool(has_positive.any()):
        return anchors.sum() * 0.0
    mean_log_prob = (positive_mask * log_prob).sum(dim=1)[has_positive] / num_positives[has_positive]
    return -(temperature / base_temperature) * mean_log_prob.mean()


class LoopClassMemory:
    """Per-class queues of segment means and pixels, updated with Python loops over images and classes.

    Each queue is (K, size, D), initialised with random unit vectors (as in the reference). Per image and class
    present: the class's mean embedding (re-normalised) goes into the segment queue, and ``pixels_per_update`` random
    pixels into the pixel queue; both are ring buffers whose pointer advances by the number of rows written.
    """

    def __init__(self, num_classes: int, dim: int, size: int, pixels_per_update: int = 10,
                 ignore_index: int = 255, device: str | torch.device = "cpu",
                 generator: torch.Generator | None = None):
        self.num_classes, self.dim, self.size = num_classes, dim, size
        self.pixels_per_update, self.ignore_index = pixels_per_update, ignore_index
        self.generator = generator
        self.segment_queue = F.normalize(torch.randn(num_classes, size, dim, generator=generator), dim=2).to(device)
        self.pixel_queue = F.normalize(torch.randn(num_classes, size, dim, generator=generator), dim=2).to(device)
        self.segment_pointer = [0] * num_classes
        self.pixel_pointer = [0] * num_classes

    @torch.no_grad()
    def update(self, keys: torch.Tensor, labels: torch.Tensor) -> None:
        """Enqueue detached embeddings. Shape: keys (B, D, h, w), labels (B, h, w) at the keys' resolution."""
        for image in range(keys.shape[0]):
            image_keys = keys[image].flatten(1)  # (D, h*w)
            image_labels = labels[image].flatten()
            for cls in torch.unique(image_labels).tolist():
                if cls == self.ignore_index:
                    continue
                pixels = torch.nonzero(image_labels == cls).squeeze(1)
                class_keys = image_keys[:, pixels]  # (D, P)
                pointer = self.segment_pointer[cls]
                self.segment_queue[cls, pointer] = F.normalize(class_keys.mean(dim=1), dim=0)
                self.segment_pointer[cls] = (pointer + 1) % self.size
                count = min(len(pixels), self.pixels_per_update)
                chosen = torch.randperm(len(pixels), generator=self.generator)[:count].to(pixels.device)
                pointer = self.pixel_pointer[cls]
                slots = (pointer + torch.arange(count, device=pixels.device)) % self.size
                self.pixel_queue[cls, slots] = class_keys[:, chosen].T
                self.pixel_pointer[cls] = (pointer + count) % self.size

    def contents(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All rows and their classes, copied class by class into one buffer (as the reference builds its contrast set).

        Shape: returns rows (K * 2 * size, D), labels (K * 2 * size,) int64.
        """
        per_class = 2 * self.size
        rows = self.segment_queue.new_zeros(self.num_classes * per_class, self.dim)
        labels = torch.zeros(self.num_classes * per_class, dtype=torch.int64, device=rows.device)
        for cls in range(self.num_classes):
            block = slice(cls * per_class, (cls + 1) * per_class)
            rows[block] = torch.cat([self.segment_queue[cls], self.pixel_queue[cls]])
            labels[block] = cls
        return rows, labels
