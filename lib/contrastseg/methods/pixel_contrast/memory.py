"""Class-wise memory banks of pixel contrast (Wang et al., ICCV 2021): FIFO queues of past embeddings per class.

``ClassMemory`` holds one queue per class, of either pixel embeddings (``kind="pixel"``: a few random pixels per
(image, class) and update) or region means (``kind="segment"``: the re-normalised mean embedding of each (image,
class)). ``PixelSegmentMemory`` holds a pixel queue, a segment queue or both behind one ``update`` / ``contents``.

What we fix with respect to the reference (``ContrastiveSeg``, ``_dequeue_and_enqueue`` and ``_sample_negative``):

* B1 / B1b: the pixel pointer advances by the number of rows written (the reference: by 1, so each write of 10 rows
  overwrites 9 of the previous one) and wraps over the oldest rows (the reference: a write that would pass the end
  overwrites the *last* K slots, the newest data, and resets the pointer to 0).
* B3: class 0 is a class like the others (the reference never writes it: it enqueues labels > 0 only; and its
  ``_sample_negative`` copies the queues of classes 1..K-1 into a zero-filled (K x size, D) buffer labelled 0, so
  ``size`` zero rows labelled 0 per queue stay in the contrast set, as positives of class-0 anchors and negatives of
  the others).
* B2: a pixel write takes the class's features (the reference writes ``this_feat[:, perm[:K]]``, ``perm`` a
  permutation of the class's n pixels, where ``this_feat[:, idxs[perm[:K]]]`` was meant: K random raster positions
  among the image's first n, whatever their class, under the class's label).
* B4: under DDP the rows of every rank are all-gathered and written by every rank in rank order, so all ranks hold the
  same memory made of all ranks' data (the reference kept only rank 0's writes through DDP's buffer broadcast).
* B5: only filled slots are returned by ``contents``; there is no random initialisation that lingers as "positives".

``reference_quirks=True`` brings back, only to measure what they cost: B1, B1b and B2 (pixel kind) and B3 (both
kinds: class 0 never written, and ``contents`` returns ``size`` zero rows labelled 0 before the written rows). It
does not bring back B4 (every rank still writes every rank's rows) nor B5's random rows in unwritten slots. The
objective's switch of the same name also drops the in-batch contrast (``objective`` in this folder).

DDP. The queues are registered buffers (saved in checkpoints) but their consistency across ranks does not rely on
DDP's buffer broadcasting: every rank writes the same gathered rows. Keep the memory outside the module wrapped in
``DistributedDataParallel``, or wrap with ``broadcast_buffers=False``; otherwise DDP re-sends rank 0's queues at every
forward (harmless here, since the ranks agree, but 19 x 5000 x 256 float32 = 97 MB per queue and step).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from contrastseg.losses.functional import class_sums_per_image
from contrastseg.samplers.hard_anchor import gather_pixels, sample_within_groups

MEMORY_KINDS = {"pixel": ("pixel",), "segment": ("segment",), "both": ("pixel", "segment")}
"""Names of the memory configurations and the queues each one holds."""


def _distributed_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_rows_from_all_ranks(rows: torch.Tensor, labels: torch.Tensor,
                               units: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Concatenate every rank's rows in rank order (identity without an initialised process group of size > 1).

    Counts differ between ranks, so the rows are padded to the largest count for ``all_gather`` and cut back after.
    ``units`` (the write unit of each row, e.g. its (image, class)) become ``unit * world_size + rank`` so that units
    of different ranks stay distinct.

    Shape:
        rows: (R, D) float; labels: (R,) int64; units: (R,) int64 -> the same with R = the sum over ranks.
    """
    world_size = _distributed_world_size()
    if world_size == 1:
        return rows, labels, units
    count = torch.tensor([rows.shape[0]], dtype=torch.int64, device=rows.device)
    counts = [torch.zeros_like(count) for _ in range(world_size)]
    dist.all_gather(counts, count)
    counts = [int(c) for c in counts]
    most = max(counts)
    if most == 0:
        return rows, labels, units
    padded_rows = rows.new_zeros(most, rows.shape[1])
    padded_rows[:rows.shape[0]] = rows
    padded_ints = labels.new_zeros(most, 2)
    padded_ints[:rows.shape[0]] = torch.stack([labels, units], dim=1)
    all_rows = [torch.empty_like(padded_rows) for _ in range(world_size)]
    all_ints = [torch.empty_like(padded_ints) for _ in range(world_size)]
    dist.all_gather(all_rows, padded_rows)
    dist.all_gather(all_ints, padded_ints)
    rows = torch.cat([part[:c] for part, c in zip(all_rows, counts)])
    ints = torch.cat([part[:c] for part, c in zip(all_ints, counts)])
    ranks = torch.repeat_interleave(torch.arange(world_size, device=rows.device),
                                    torch.tensor(counts, device=rows.device))
    return rows, ints[:, 0], ints[:, 1] * world_size + ranks


class ClassMemory(nn.Module):
    """One FIFO queue of unit embeddings per class, written from the detached embeddings of each batch.

    Args:
        num_classes: K.
        dim: embedding dimension D.
        size: slots per class (5000 in the reference).
        kind: ``"pixel"``: per (image, class) up to ``pixels_per_update`` random pixels per update;
            ``"segment"``: per (image, class) its mean embedding, re-normalised to unit norm.
        pixels_per_update: pixel kind only (10 in the reference).
        reference_quirks: reproduce the reference's defects B1 (pixel pointer += 1 per write instead of += rows
            written), B1b (a pixel write that reaches the end goes to the last slots, pointer reset to 0), B2 (a
            pixel write takes the features at K random raster positions among the image's first n, n the class's
            pixel count, instead of K of the class's pixels) and B3 (class 0 never written, and its ``size`` zero
            rows returned by ``contents`` as class-0 rows). Only to measure their cost; writes are then sequential
            per (image, class).
        ignore_index: label value never written.

    Buffers:
        queue: (K, size, D) float; slot ``[c, i]`` is valid for ``i < filled[c]``.
        pointer: (K,) int64, the next slot to write per class (the oldest row once the class is full).
        filled: (K,) int64, number of valid slots per class.
    """

    def __init__(self, num_classes: int, dim: int, size: int, kind: str = "pixel", pixels_per_update: int = 10,
                 reference_quirks: bool = False, ignore_index: int = 255):
        super().__init__()
        if kind not in ("pixel", "segment"):
            raise ValueError(f"unknown memory kind {kind!r}; valid kinds: pixel, segment")
        if num_classes < 1 or dim < 1 or size < 1 or pixels_per_update < 1:
            raise ValueError("num_classes, dim, size and pixels_per_update must be positive")
        if reference_quirks and kind == "pixel" and size < pixels_per_update:
            raise ValueError(f"the reference's pointer rule needs size >= pixels_per_update ({pixels_per_update})")
        self.num_classes, self.dim, self.size, self.kind = num_classes, dim, size, kind
        self.pixels_per_update, self.reference_quirks = pixels_per_update, reference_quirks
        self.ignore_index = ignore_index
        self.register_buffer("queue", torch.zeros(num_classes, size, dim))
        self.register_buffer("pointer", torch.zeros(num_classes, dtype=torch.int64))
        self.register_buffer("filled", torch.zeros(num_classes, dtype=torch.int64))

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, dim={self.dim}, size={self.size}, kind={self.kind!r}, "
                f"pixels_per_update={self.pixels_per_update}, reference_quirks={self.reference_quirks}")

    @torch.no_grad()
    def reset(self) -> None:
        """Empty every queue."""
        self.queue.zero_()
        self.pointer.zero_()
        self.filled.zero_()

    def contents(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The filled slots (a fresh memory contributes nothing), class by class in slot order.

        With ``reference_quirks``, first ``size`` zero rows labelled 0 (B3: class 0 is never written, yet the
        reference contrasts with a zero block labelled 0), then the filled slots of the other classes.

        Shape:
            returns: rows (R, D) float and labels (R,) int64, R = ``filled.sum()`` (+ ``size`` with quirks).
        """
        valid = torch.arange(self.size, device=self.queue.device) < self.filled[:, None]
        classes = torch.arange(self.num_classes, device=self.queue.device)[:, None].expand(-1, self.size)
        rows, labels = self.queue[valid], classes[valid]
        if self.reference_quirks:
            zero_rows = self.queue.new_zeros(self.size, self.dim)
            rows = torch.cat([zero_rows, rows[labels != 0]])
            labels = torch.cat([labels.new_zeros(self.size), labels[labels != 0]])
        return rows, labels

    @torch.no_grad()
    def update(self, keys: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Write this batch's rows (every rank's under DDP, in rank order) into the queues.

        Args:
            keys: detached unit-norm embeddings.
            labels: ground truth at the embedding resolution; ``ignore_index`` pixels are skipped.
            generator: source of the pixel kind's random choice; None uses the global RNG.

        Shape:
            keys: (B, D, h, w) float; labels: (B, h, w) int64.
        """
        rows, row_labels, units = self.select_rows(keys, labels, generator)
        rows, row_labels, units = gather_rows_from_all_ranks(rows, row_labels, units)
        if self.reference_quirks:
            keep = row_labels != 0  # B3: the reference only enqueues labels > 0
            rows, row_labels, units = rows[keep], row_labels[keep], units[keep]
            if self.kind == "pixel":
                self._write_reference_pointer(rows, row_labels, units)
                return
        self._write_fifo(rows, row_labels)

    @torch.no_grad()
    def select_rows(self, keys: torch.Tensor, labels: torch.Tensor,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The rows this batch would write, with their class and write unit (image * K + class), in unit order.

        Shape:
            keys: (B, D, h, w); labels: (B, h, w) -> rows (R, D), labels (R,) int64, units (R,) int64.
        """
        if keys.dim() != 4 or labels.shape != (keys.shape[0], *keys.shape[2:]) or keys.shape[1] != self.dim:
            raise ValueError(f"keys (B, {self.dim}, h, w) {tuple(keys.shape)} and labels (B, h, w) "
                             f"{tuple(labels.shape)} do not match")
        keys = keys.detach().to(self.queue.dtype)
        batch, dim = keys.shape[:2]
        classes = labels.reshape(batch, -1).long()
        valid = classes != self.ignore_index
        if classes.numel():
            smallest, largest = torch.stack(torch.aminmax(torch.where(valid, classes, 0))).tolist()
            if smallest < 0 or largest >= self.num_classes:
                raise ValueError(f"label values outside [0, {self.num_classes}) that are not {self.ignore_index}")
        num_units = batch * self.num_classes  # unit image * K + class; ignored pixels go to the spare unit B * K
        units = torch.where(valid, torch.arange(batch, device=keys.device)[:, None] * self.num_classes + classes,
                            num_units).reshape(-1)
        counts = torch.bincount(units, minlength=num_units + 1)
        if self.kind == "pixel":
            quota = torch.full_like(counts, self.pixels_per_update)
            quota[-1] = 0
            chosen = sample_within_groups(units, quota, generator, counts)
            row_labels, row_units = classes.reshape(-1)[chosen], units[chosen]
            if self.reference_quirks:
                chosen = _reference_raster_positions(chosen, units, counts, classes.shape[1])
            return gather_pixels(keys, chosen), row_labels, row_units
        # region means per (image, class); on CUDA the float sums are not bit-reproducible, but under DDP every
        # rank still writes the same (gathered) rows
        sums, _ = class_sums_per_image(keys, labels, self.num_classes, self.ignore_index)
        sums = sums.reshape(num_units, dim)  # row image * K + class
        present = torch.nonzero(counts[:num_units]).squeeze(1)
        means = sums[present] / counts[present, None].to(sums.dtype)
        return F.normalize(means, dim=1), present % self.num_classes, present

    def _write_fifo(self, rows: torch.Tensor, labels: torch.Tensor) -> None:
        """Ring-buffer write, in row order within each class: slots pointer, pointer + 1, ... (mod size)."""
        if labels.numel() == 0:
            return
        order = torch.sort(labels, stable=True).indices
        rows, labels = rows[order], labels[order]
        counts = torch.bincount(labels, minlength=self.num_classes)
        rank = torch.arange(labels.numel(), device=labels.device) - (counts.cumsum(0) - counts)[labels]
        survives = rank >= (counts - self.size)[labels]  # more rows than slots: only the newest `size` remain
        slots = (self.pointer[labels] + rank) % self.size
        self.queue[labels[survives], slots[survives]] = rows[survives].to(self.queue.dtype)
        self.pointer.copy_((self.pointer + counts) % self.size)
        self.filled.copy_(torch.clamp(self.filled + counts, max=self.size))

    def _write_reference_pointer(self, rows: torch.Tensor, labels: torch.Tensor, units: torch.Tensor) -> None:
        """The reference's pixel-queue rule, one write per unit in order (defects B1, B1b).

        A write of k rows at pointer p goes to slots [p, p + k) and sets p += 1; if p + k >= size it goes to the last
        k slots [size - k, size) and sets p = 0.
        """
        if labels.numel() == 0:
            return
        starts = torch.ones_like(units, dtype=torch.bool)
        starts[1:] = units[1:] != units[:-1]
        bounds = torch.nonzero(starts).squeeze(1).tolist() + [labels.numel()]
        run_classes = labels[starts].tolist()
        pointer, filled = self.pointer.tolist(), self.filled.tolist()
        first_slots = []
        for cls, begin, end in zip(run_classes, bounds[:-1], bounds[1:]):
            count = end - begin
            if pointer[cls] + count >= self.size:
                first, pointer[cls] = self.size - count, 0
            else:
                first, pointer[cls] = pointer[cls], pointer[cls] + 1
            filled[cls] = max(filled[cls], first + count)
            first_slots.append(first)
        run_lengths = torch.tensor([e - b for b, e in zip(bounds[:-1], bounds[1:])], device=labels.device)
        first = torch.repeat_interleave(torch.tensor(first_slots, device=labels.device), run_lengths)
        run_start = torch.repeat_interleave(torch.tensor(bounds[:-1], device=labels.device), run_lengths)
        slots = first + torch.arange(labels.numel(), device=labels.device) - run_start
        # later writes overwrite earlier ones: keep the last row written to each slot
        target = labels * self.size + slots
        last = torch.full((self.num_classes * self.size,), -1, dtype=torch.int64, device=labels.device)
        last.scatter_reduce_(0, target, torch.arange(labels.numel(), device=labels.device), reduce="amax")
        winners = last[last >= 0]
        self.queue[labels[winners], slots[winners]] = rows[winners].to(self.queue.dtype)
        self.pointer.copy_(torch.tensor(pointer, device=self.pointer.device))
        self.filled.copy_(torch.tensor(filled, device=self.filled.device))


def _reference_raster_positions(chosen: torch.Tensor, units: torch.Tensor, counts: torch.Tensor,
                                pixels_per_image: int) -> torch.Tensor:
    """The reference's pixel write (B2): the j-th pixel of a unit (in raster order) is replaced by the image's pixel
    at raster position j, so K uniform pixels of a class of n pixels become K uniform positions among 0..n-1.

    Shape: chosen (R,) flat pixel indices; units (B * h * w,) unit per pixel; counts (G,) pixels per unit -> (R,).
    """
    order = torch.argsort(units, stable=True)  # image-major, raster order within each unit
    rank = torch.empty_like(units)
    rank[order] = torch.arange(units.numel(), device=units.device) - (counts.cumsum(0) - counts)[units[order]]
    image = chosen.div(pixels_per_image, rounding_mode="floor")
    return image * pixels_per_image + rank[chosen]


class PixelSegmentMemory(nn.Module):
    """A pixel queue, a segment queue or both (``kinds`` = "pixel", "segment", "both"), updated and read together.

    Args: as ``ClassMemory``; ``kinds`` names the queues held (``MEMORY_KINDS``).
    """

    def __init__(self, num_classes: int, dim: int, size: int, kinds: str = "both", pixels_per_update: int = 10,
                 reference_quirks: bool = False, ignore_index: int = 255):
        super().__init__()
        if kinds not in MEMORY_KINDS:
            raise ValueError(f"unknown memory kinds {kinds!r}; valid: {', '.join(MEMORY_KINDS)}")
        self.memories = nn.ModuleDict({
            kind: ClassMemory(num_classes, dim, size, kind=kind, pixels_per_update=pixels_per_update,
                              reference_quirks=reference_quirks, ignore_index=ignore_index)
            for kind in MEMORY_KINDS[kinds]
        })

    @torch.no_grad()
    def update(self, keys: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Write the batch into every queue. Shape: keys (B, D, h, w) detached unit-norm; labels (B, h, w)."""
        for memory in self.memories.values():
            memory.update(keys, labels, generator)

    def contents(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Filled rows of all queues, pixel queue first. Shape: rows (R, D), labels (R,) int64."""
        parts = [memory.contents() for memory in self.memories.values()]
        return torch.cat([rows for rows, _ in parts]), torch.cat([labels for _, labels in parts])

    @torch.no_grad()
    def reset(self) -> None:
        for memory in self.memories.values():
            memory.reset()
