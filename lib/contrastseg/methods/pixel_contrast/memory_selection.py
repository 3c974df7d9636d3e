"""Per-anchor selection of positives and negatives from a memory: "all", "random", "hardest", "semi_hard".

The paper (Wang et al., ICCV 2021, Sec. 3) describes hardest and semi-hard example sampling of the contrast set from
the memory; the released code has neither and contrasts every anchor with every memory row ("all"). What is known of
the paper's version comes from a third-party reading of its text, **unverified** against the PDF: K_pos = 1024
positives and K_neg = 2048 negatives per anchor; "hardest" = the top-K hardest; "semi-hard" = K drawn at random from
the 10% hardest. Hardness is measured by the cosine similarity of the unit-norm embeddings: a positive is hard when it
is dissimilar to the anchor, a negative when it is similar.

Our choices (not from the paper): "random" as a control (K of each set uniformly); the semi-hard pool is the hardest
``ceil(fraction * set size)`` rows but never fewer than K (so a small set gives the hardest K, or all of it), with
``fraction = SEMI_HARD_POOL`` (0.75) by default instead of the paper's 10%; a set smaller than K is taken whole; ties
in similarity are broken arbitrarily (by ``topk``); anchors are processed in chunks so that at most
``chunk_elements`` anchor x memory entries are held per intermediate.

The result is a boolean (N, M) mask for ``contrast_mask`` of the loss; which entries are positives and which negatives
follows from the labels.
"""

from __future__ import annotations

import math

import torch

CONTRAST_MODES = ("all", "random", "hardest", "semi_hard")

SEMI_HARD_POOL = 0.75
"""Default share of each set (an anchor's memory positives, its negatives) that semi-hard draws its K from. With the
paper's 10% the positives' pool is smaller than K at every preset (one queue of 256 rows per class at smoke: 26 <
K_pos = 128; of 5000 at demo and in the paper: 500 < 1024), and at smoke the negatives' too (205 of 8 x 256 < K_neg =
256), so the pool is raised to K and semi-hard sampling is hardest sampling. 0.75 gives pools above K at smoke (192
positives, 1536 negatives) and at demo (3750, 30000): K at random among the hardest three quarters, i.e. the hard
rows without the easiest quarter."""

SELECTION_BUDGET = 2**24
"""Default number of anchor x memory entries per chunk (a float32 (chunk, M) matrix is 64 MB)."""


def _uniform(shape: tuple[int, ...], device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
    if generator is None:
        return torch.rand(shape, device=device)
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def _top_k_in_set(scores: torch.Tensor, in_set: torch.Tensor, k: int) -> torch.Tensor:
    """Per row, the (up to) k members of the set with the highest score. Shape: (n, M), (n, M) bool -> (n, M) bool."""
    k = min(k, scores.shape[1])
    if k <= 0:
        return torch.zeros_like(in_set)
    picked = scores.masked_fill(~in_set, -math.inf).topk(k, dim=1).indices
    return torch.zeros_like(in_set).scatter_(1, picked, True) & in_set  # rows with fewer than k members: all of them


def _semi_hard(hardness: torch.Tensor, in_set: torch.Tensor, k: int, fraction: float,
               generator: torch.Generator | None) -> torch.Tensor:
    """Per row, k random members among the hardest ``max(ceil(fraction * set size), k)`` members of the set."""
    set_size = in_set.sum(1)
    wanted = torch.ceil(set_size.double() * fraction - 1e-9).long()  # the tolerance keeps 0.1 * 1000 at 100
    pool_size = torch.minimum(torch.clamp(wanted, min=k), set_size)
    widest = int(pool_size.max())
    if widest == 0 or k <= 0:
        return torch.zeros_like(in_set)
    pool = hardness.masked_fill(~in_set, -math.inf).topk(widest, dim=1).indices  # (n, widest), hardest first
    in_pool = torch.arange(widest, device=pool.device) < pool_size[:, None]
    keys = _uniform(tuple(pool.shape), pool.device, generator).masked_fill(~in_pool, -math.inf)
    drawn = keys.topk(min(k, widest), dim=1)
    picked = pool.gather(1, drawn.indices)
    return torch.zeros_like(in_set).scatter_(1, picked, drawn.values > -math.inf) & in_set


@torch.no_grad()
def select_contrast(anchors: torch.Tensor, anchor_labels: torch.Tensor, memory: torch.Tensor,
                    memory_labels: torch.Tensor, mode: str = "all", num_positives: int = 1024,
                    num_negatives: int = 2048, semi_hard_fraction: float = SEMI_HARD_POOL,
                    generator: torch.Generator | None = None, chunk_elements: int = SELECTION_BUDGET) -> torch.Tensor:
    """Which memory rows each anchor is contrasted with.

    Modes, for each anchor with positives P (memory rows of its class) and negatives Q (the other rows):

    * ``"all"``: every row (the reference's memory loss).
    * ``"random"``: ``num_positives`` rows of P and ``num_negatives`` rows of Q, uniformly without replacement.
    * ``"hardest"``: the ``num_positives`` rows of P with the lowest similarity to the anchor and the
      ``num_negatives`` rows of Q with the highest (the paper's hardest example sampling).
    * ``"semi_hard"``: ``num_positives`` rows at random among the hardest ``max(ceil(semi_hard_fraction * |P|),
      num_positives)`` of P, and likewise for Q (the paper's semi-hard example sampling, as far as known).

    A set with fewer rows than requested is taken whole. K_pos and K_neg follow the unverified reading of the paper
    (see the module docstring); the semi-hard pool does not (``SEMI_HARD_POOL``). Similarity is the dot product,
    i.e. cosine for unit-norm rows.

    Args:
        anchors: anchor embeddings (detached or not; no gradient flows).
        anchor_labels: class of each anchor.
        memory: memory rows.
        memory_labels: class of each memory row.
        mode: one of ``CONTRAST_MODES``.
        num_positives: K_pos.
        num_negatives: K_neg.
        semi_hard_fraction: size of the semi-hard pool as a fraction of each set (``ExperimentConfig.semi_hard_pool``);
            semi-hard differs from hardest only where ``ceil(fraction * |set|) > K``.
        generator: source of randomness for "random" and "semi_hard"; None uses the global RNG. A generator on the
            anchors' device avoids a host-to-device copy of the random keys.
        chunk_elements: anchors are processed in chunks of ``max(1, chunk_elements // M)`` rows.

    Shape:
        anchors: (N, D) float; anchor_labels: (N,) int; memory: (M, D) float; memory_labels: (M,) int.
        returns: (N, M) bool, True where memory row j takes part in the loss of anchor i.
    """
    if mode not in CONTRAST_MODES:
        raise ValueError(f"unknown mode {mode!r}; valid modes: {', '.join(CONTRAST_MODES)}")
    if anchors.dim() != 2 or memory.dim() != 2 or anchors.shape[1] != memory.shape[1]:
        raise ValueError(f"anchors (N, D) {tuple(anchors.shape)} and memory (M, D) {tuple(memory.shape)} mismatch")
    if anchor_labels.shape != anchors.shape[:1] or memory_labels.shape != memory.shape[:1]:
        raise ValueError("anchor_labels must be (N,) and memory_labels (M,)")
    num_anchors, num_rows = anchors.shape[0], memory.shape[0]
    if mode == "all":
        return torch.ones(num_anchors, num_rows, dtype=torch.bool, device=anchors.device)
    mask = torch.zeros(num_anchors, num_rows, dtype=torch.bool, device=anchors.device)
    if num_anchors == 0 or num_rows == 0:
        return mask
    chunk = max(1, chunk_elements // num_rows)
    memory_t = memory.to(torch.promote_types(memory.dtype, torch.float32)).t()
    for start in range(0, num_anchors, chunk):
        rows = slice(start, start + chunk)
        positive = anchor_labels[rows, None] == memory_labels[None, :]
        if mode == "random":
            keys = _uniform(tuple(positive.shape), anchors.device, generator)
            mask[rows] = _top_k_in_set(keys, positive, num_positives) | _top_k_in_set(keys, ~positive, num_negatives)
            continue
        similarity = anchors[rows].to(memory_t.dtype) @ memory_t
        if mode == "hardest":
            mask[rows] = (_top_k_in_set(-similarity, positive, num_positives)
                          | _top_k_in_set(similarity, ~positive, num_negatives))
        else:
            mask[rows] = (_semi_hard(-similarity, positive, num_positives, semi_hard_fraction, generator)
                          | _semi_hard(similarity, ~positive, num_negatives, semi_hard_fraction, generator))
    return mask
