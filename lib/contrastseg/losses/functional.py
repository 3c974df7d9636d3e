"""Pure functions behind the contrastive losses; the ``nn.Module`` shells in this package only hold hyperparameters.

``pixel_contrast`` is the supervised pixel-to-pixel InfoNCE of Wang et al. (ICCV 2021, "Exploring Cross-Image Pixel
Contrast for Semantic Segmentation"), with the reference's denominator: each positive is contrasted against itself plus
all negatives of its anchor, not against every other sample as in SupCon.

Memory and backward pass. The anchors x contrast similarity matrix is never built whole: anchors are processed in
chunks of rows, so that at most ``chunk_size x M`` similarities exist at once (with two boolean masks and the index
lists of the chunk's positives: about 8 bytes per similarity in float32). The loss is a ``torch.autograd.Function``
whose forward pass also computes the gradient, in closed form, while each chunk's similarities are at hand: the
(chunk, M) gradient block is built in place of the similarities and immediately reduced to ``(chunk, D)`` and
``(M, D)`` input gradients. The backward pass only multiplies those by the incoming (scalar) gradient. So the
backward pass is bounded by the chunk size too (nothing of size (N, M) or (chunk, M) is kept; what is kept between
forward and backward has the size of the inputs that require grad), and the whole costs three matmuls, as a dense
autograd implementation would, with far fewer passes over (chunk, M) memory. Chosen over
``torch.utils.checkpoint`` per chunk, which would recompute every chunk's forward pass in backward and keep autograd's
many full-size intermediates of a chunk. The prices: the gradient is computed whenever an input requires grad, even
if backward is never called; double backward is not supported; and the closed form must follow the formula (the
tests check it with ``gradcheck``). Elementwise work on a (chunk, M) block is limited to in-place masked fills, exp,
sums and comparisons; log, softplus and sigmoid of the per-positive terms run only over the positives (gathered with
``nonzero``: one device synchronisation per chunk).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

SIMILARITY_BUDGET = 2**22
"""Default number of anchor x contrast similarities held at once (about 8 bytes each of working memory: 32 MB)."""

MIN_CHUNK_ROWS = 128
"""Anchor rows per chunk below which the budget is stretched (up to 4x): each chunk reads the whole contrast set
twice, so thin chunks are slow. Measured on a 2-core CPU, 988 anchors x 190,000 rows, D = 256, forward + backward:
22-row chunks (the plain budget) 6.1 s, 88-row 3.3 s, 128-row 3.4 s."""


def default_chunk_size(num_contrast: int, budget: int = SIMILARITY_BUDGET) -> int:
    """Anchor rows per chunk: ``budget // num_contrast``, raised towards ``MIN_CHUNK_ROWS`` as long as
    ``rows x num_contrast <= 4 x budget``; at least one row."""
    rows = budget // max(1, num_contrast)
    if rows < MIN_CHUNK_ROWS:
        rows = min(MIN_CHUNK_ROWS, 4 * budget // max(1, num_contrast))
    return max(1, rows)


def pixel_contrast(anchors: torch.Tensor, anchor_labels: torch.Tensor, contrast: torch.Tensor,
                   contrast_labels: torch.Tensor, temperature: float = 0.1, base_temperature: float = 0.07,
                   exclude_self: bool = False, *, contrast_mask: torch.Tensor | None = None,
                   memory: torch.Tensor | None = None, memory_labels: torch.Tensor | None = None,
                   chunk_size: int | None = None) -> torch.Tensor:
    """Supervised pixel contrast of anchors against a contrast set (the batch itself or a memory).

    With ``s = anchors @ contrast.T / temperature``, the positives of anchor i are the contrast rows with its label and
    its negatives the rows with another label. Each positive p gives
    ``l_ip = s_ip - log(exp(s_ip) + sum_n exp(s_in)) = -softplus(lse_i - s_ip)``, where ``lse_i`` is the log-sum-exp of
    s over the negatives of i (the softplus form is the same quantity as ``s_ip - logaddexp(s_ip, lse_i)`` without
    its cancellation when the positive dominates). An anchor's loss is ``-(temperature / base_temperature)`` times the
    mean of its ``l_ip``; the result is the mean over the anchors that have at least one positive.

    Edge cases give finite values and gradients: an anchor without negatives has ``l_ip = 0``; an anchor without
    positives is left out of the mean; when no anchor has a positive (also N = 0 or M = 0) the result is a zero that
    is still connected to ``anchors`` (its gradient is zero).

    Args:
        anchors: unit-norm anchor embeddings.
        anchor_labels: class of each anchor.
        contrast: unit-norm contrast embeddings (the anchors themselves for in-batch contrast, or memory rows).
        contrast_labels: class of each contrast row.
        temperature: tau in ``s = f . g / tau``.
        base_temperature: the loss is scaled by ``temperature / base_temperature``.
        exclude_self: leave contrast row i out for anchor i. Only meaningful when the contrast set is the anchors
            (row i is anchor i), so it requires N == M.
        contrast_mask: if given, only the True entries of row i take part for anchor i (as positives or negatives
            according to the labels): how a sampler picks per-anchor positives and negatives from a memory.
        memory: further unit-norm contrast rows after ``contrast`` (a memory bank's), constants: no gradient is
            computed for them, which saves a third of the work when ``contrast`` (e.g. the anchors themselves)
            needs one. For ``contrast_mask`` and the formula they are contrast rows M, ..., M + R - 1.
        memory_labels: class of each memory row; required with ``memory``.
        chunk_size: anchor rows per chunk; None picks ``default_chunk_size(M + R)`` (about
            ``SIMILARITY_BUDGET // (M + R)``).

    Shape:
        anchors: (N, D) float (any floating dtype; half and bfloat16 are computed in float32, also under autocast).
        anchor_labels: (N,) int.
        contrast: (M, D) float.
        contrast_labels: (M,) int.
        memory: (R, D) float; memory_labels: (R,) int.
        contrast_mask: (N, M + R) bool (R = 0 without memory).
        returns: () float32 (float64 when an input is float64).

    Raises:
        ValueError: on inconsistent shapes, a non-bool ``contrast_mask``, ``exclude_self`` with N != M, or a
            non-positive ``chunk_size`` / temperature.
    """
    if (memory is None) != (memory_labels is None):
        raise ValueError("memory and memory_labels go together: give both or neither")
    if memory is None:
        memory, memory_labels = contrast[:0], contrast_labels[:0]
    _check_inputs(anchors, anchor_labels, contrast, contrast_labels, exclude_self, contrast_mask, chunk_size,
                  temperature, base_temperature, memory, memory_labels)
    dtype = torch.promote_types(torch.promote_types(anchors.dtype, contrast.dtype), torch.float32)
    anchors, contrast = anchors.to(dtype), contrast.to(dtype)
    num_anchors, num_contrast = anchors.shape[0], contrast.shape[0] + memory.shape[0]
    if num_anchors == 0 or num_contrast == 0:  # a zero connected to the inputs, so that backward() works
        return (anchors.sum() + contrast.sum()) * 0.0
    if chunk_size is None:
        chunk_size = default_chunk_size(num_contrast)
    scale = temperature / base_temperature
    with torch.autocast(device_type=anchors.device.type, enabled=False):  # the matmuls stay in `dtype` under AMP
        return _PixelContrast.apply(anchors, contrast, anchor_labels, contrast_labels, contrast_mask, temperature,
                                    scale, exclude_self, chunk_size, memory.detach().to(dtype), memory_labels)


class _PixelContrast(torch.autograd.Function):
    """The chunked loss; its gradient is computed in the forward pass, chunk by chunk, and only scaled in backward.

    With ``gap_ip = lse_i - s_ip`` the loss is ``factor * sum_i (1 / |P(i)|) sum_{p in P(i)} softplus(gap_ip)``,
    ``factor = scale / (number of anchors with a positive)``. Its derivative with respect to the similarities is
    ``-factor * q_ip / |P(i)|`` at a positive and ``factor * (sum_p q_ip / |P(i)|) * exp(s_in - lse_i)`` at a
    negative, with ``q_ip = sigmoid(gap_ip)``; then ``d anchors = G @ contrast / tau``, ``d contrast = G.T @ anchors
    / tau`` (over the columns of ``contrast`` only: the memory rows after it get none). The loss is a scalar, so the
    backward pass only multiplies these by the incoming gradient.
    """

    @staticmethod
    def forward(ctx, anchors, contrast, anchor_labels, contrast_labels, contrast_mask, temperature, scale,
                exclude_self, chunk_size, memory, memory_labels):
        needs_anchor_grad, needs_contrast_grad = ctx.needs_input_grad[:2]
        grad_anchors = torch.zeros_like(anchors) if needs_anchor_grad else None
        grad_contrast = torch.zeros_like(contrast) if needs_contrast_grad else None
        num_grad_columns = contrast.shape[0]
        if memory.shape[0]:
            contrast = torch.cat([contrast, memory])
            contrast_labels = torch.cat([contrast_labels, memory_labels])
        total = anchors.new_zeros(())
        counted = torch.zeros((), dtype=torch.int64, device=anchors.device)
        for start in range(0, anchors.shape[0], chunk_size):
            stop = min(start + chunk_size, anchors.shape[0])
            chunk_anchors = anchors[start:stop]
            logits = (chunk_anchors / temperature) @ contrast.T  # (C, M + R)
            positives, not_negative = _chunk_masks(anchor_labels[start:stop], contrast_labels,
                                                   None if contrast_mask is None else contrast_mask[start:stop],
                                                   start if exclude_self else None)
            rows, columns = positives.nonzero(as_tuple=True)  # every positive, row-major
            gap = -logits[rows, columns]
            negative_exp, row_max = _exp_over_negatives_(logits, not_negative)  # overwrites logits
            negative_sum = negative_exp.sum(dim=1)
            gap += (negative_sum.log() + row_max)[rows]  # lse - s; -inf for an anchor without negatives
            num_positives = torch.bincount(rows, minlength=stop - start)
            inverse_positives = 1.0 / num_positives.clamp(min=1).to(anchors.dtype)
            total += (F.softplus(gap) * inverse_positives[rows]).sum()
            counted += (num_positives > 0).sum()
            if not (needs_anchor_grad or needs_contrast_grad):
                continue
            pull = torch.sigmoid(gap) * inverse_positives[rows]  # -d loss / d s_ip, up to the factor
            push = torch.zeros_like(negative_sum).index_add_(0, rows, pull)  # sum_p q_ip / |P(i)|
            push = torch.where(negative_sum > 0, push / negative_sum, 0.0)
            grad_logits = negative_exp.mul_(push[:, None])  # push_i * exp(s_in - lse_i); 0 where not a negative
            grad_logits[rows, columns] = -pull
            if needs_anchor_grad:
                grad_anchors[start:stop] = grad_logits @ contrast / temperature
            if needs_contrast_grad:
                grad_contrast.addmm_(grad_logits[:, :num_grad_columns].T, chunk_anchors, alpha=1 / temperature)
        factor = scale / counted.clamp(min=1).to(anchors.dtype)
        ctx.save_for_backward(None if grad_anchors is None else grad_anchors * factor,
                              None if grad_contrast is None else grad_contrast * factor)
        return total * factor

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        grad_anchors, grad_contrast = ctx.saved_tensors
        return (None if grad_anchors is None else grad_anchors * grad_output,
                None if grad_contrast is None else grad_contrast * grad_output,
                None, None, None, None, None, None, None, None, None)


def _chunk_masks(anchor_labels: torch.Tensor, contrast_labels: torch.Tensor, contrast_mask: torch.Tensor | None,
                 self_offset: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Positives and "not a negative" (same label, or masked out) of a chunk of anchors.

    ``self_offset`` is the index of the chunk's first anchor in the contrast set when ``exclude_self`` is on (contrast
    row ``self_offset + i`` is anchor i of the chunk), else None.

    Shape: anchor_labels (C,); contrast_labels (M,); contrast_mask (C, M) bool; returns two (C, M) bool.
    """
    same_label = anchor_labels[:, None] == contrast_labels[None, :]
    if contrast_mask is None:
        not_negative = same_label
        positives = same_label.clone() if self_offset is not None else same_label
    else:
        not_negative = same_label | ~contrast_mask
        positives = same_label & contrast_mask
    if self_offset is not None:  # anchor i is contrast row self_offset + i: same label, so it is only a positive
        rows = torch.arange(anchor_labels.shape[0], device=anchor_labels.device)
        positives[rows, rows + self_offset] = False
    return positives, not_negative


def _exp_over_negatives_(logits: torch.Tensor, not_negative: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``exp(s - row_max)`` at the negatives and 0 elsewhere, written into ``logits``, and the row maxima.

    The maximum is over each row's negatives (0 for a row without any, whose result is all zeros), so the row's
    log-sum-exp over its negatives is ``log(result.sum(1)) + row_max`` and ``exp(s - lse) = result / result.sum(1)``.

    Shape: logits (C, M) float; not_negative (C, M) bool; returns (C, M) (the same storage as logits), (C,).
    """
    logits.masked_fill_(not_negative, float("-inf"))
    row_max = logits.amax(dim=1)
    row_max = torch.where(torch.isfinite(row_max), row_max, 0.0)
    return logits.sub_(row_max[:, None]).exp_(), row_max


def _check_inputs(anchors, anchor_labels, contrast, contrast_labels, exclude_self, contrast_mask, chunk_size,
                  temperature, base_temperature, memory, memory_labels) -> None:
    if anchors.dim() != 2:
        raise ValueError(f"anchors must be (N, D), got shape {tuple(anchors.shape)}")
    if contrast.dim() != 2:
        raise ValueError(f"contrast must be (M, D), got shape {tuple(contrast.shape)}")
    if not (anchors.is_floating_point() and contrast.is_floating_point()):
        raise ValueError(f"anchors and contrast must be floating point, got {anchors.dtype} and {contrast.dtype}")
    if anchors.shape[1] != contrast.shape[1]:
        raise ValueError(f"anchors have dimension D={anchors.shape[1]} but contrast rows have D={contrast.shape[1]}")
    if anchor_labels.shape != anchors.shape[:1]:
        raise ValueError(f"anchor_labels must be ({anchors.shape[0]},) to match anchors {tuple(anchors.shape)}, "
                         f"got {tuple(anchor_labels.shape)}")
    if contrast_labels.shape != contrast.shape[:1]:
        raise ValueError(f"contrast_labels must be ({contrast.shape[0]},) to match contrast "
                         f"{tuple(contrast.shape)}, got {tuple(contrast_labels.shape)}")
    if memory.dim() != 2 or memory.shape[1] != anchors.shape[1] or not memory.is_floating_point():
        raise ValueError(f"memory must be (R, D={anchors.shape[1]}) floating point, got {tuple(memory.shape)} "
                         f"{memory.dtype}")
    if memory_labels.shape != memory.shape[:1]:
        raise ValueError(f"memory_labels must be ({memory.shape[0]},) to match memory {tuple(memory.shape)}, "
                         f"got {tuple(memory_labels.shape)}")
    if exclude_self and anchors.shape[0] != contrast.shape[0]:
        raise ValueError(f"exclude_self needs the contrast set to be the anchors (row i = anchor i), but there are "
                         f"{anchors.shape[0]} anchors and {contrast.shape[0]} contrast rows")
    if contrast_mask is not None:
        expected = (anchors.shape[0], contrast.shape[0] + memory.shape[0])
        if tuple(contrast_mask.shape) != expected:
            raise ValueError(f"contrast_mask must be (N, M + R) = {expected}, got {tuple(contrast_mask.shape)}")
        if contrast_mask.dtype != torch.bool:
            raise ValueError(f"contrast_mask must be bool, got {contrast_mask.dtype}")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of anchor rows, got {chunk_size}")
    if not (temperature > 0 and base_temperature > 0):
        raise ValueError(f"temperatures must be positive, got temperature={temperature}, "
                         f"base_temperature={base_temperature}")


def class_sums_per_image(embeddings: torch.Tensor, labels: torch.Tensor, num_classes: int,
                         ignore_index: int = 255) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum and count of the embeddings of each class in each image, by a scatter over the map (no copy of it).

    Differentiable with respect to ``embeddings``. Pixels labelled ``ignore_index`` are left out.

    Shape:
        embeddings: (B, D, h, w); labels: (B, h, w) int64 at the same resolution.
        returns: sums (B, K, D), counts (B, K) int64.
    """
    if embeddings.shape[-2:] != labels.shape[-2:] or embeddings.shape[0] != labels.shape[0]:
        raise ValueError(f"embeddings {tuple(embeddings.shape)} and labels {tuple(labels.shape)} do not match")
    batch, dim = embeddings.shape[:2]
    flat = labels.reshape(batch, 1, -1).long()
    bins = torch.where(flat != ignore_index, flat, num_classes)  # ignored pixels into a spare class K
    sums = embeddings.new_zeros(batch, dim, num_classes + 1).scatter_add(
        2, bins.expand(batch, dim, bins.shape[2]), embeddings.reshape(batch, dim, -1))
    counts = torch.zeros(batch, num_classes + 1, dtype=torch.int64, device=labels.device).scatter_add_(
        1, bins[:, 0], torch.ones_like(bins[:, 0]))
    return sums[:, :, :num_classes].transpose(1, 2), counts[:, :num_classes]
