"""Class-wise memory queues: FIFO order, pointers, segment means, the reference's quirks, DDP equivalence."""

from collections import defaultdict

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from contrastseg.methods.pixel_contrast.memory import ClassMemory, PixelSegmentMemory

IGNORE = 255


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def one_pixel_images(values, cls: int = 1, dim: int = 2):
    """One 1x1 image per value, labelled ``cls``; the key's first coordinate is the value (its identity)."""
    keys = torch.zeros(len(values), dim, 1, 1)
    keys[:, 0, 0, 0] = torch.tensor(values, dtype=torch.float32)
    return keys, torch.full((len(values), 1, 1), cls, dtype=torch.int64)


def stored_values(memory: ClassMemory, cls: int) -> list[int]:
    """First coordinate of the class's filled slots, oldest first (reading from the pointer, around the ring)."""
    filled, pointer = int(memory.filled[cls]), int(memory.pointer[cls])
    slots = [(pointer + i) % memory.size for i in range(memory.size)] if filled == memory.size else range(filled)
    return [int(memory.queue[cls, slot, 0]) for slot in slots]


def random_batch(batch: int, height: int, width: int, num_classes: int, dim: int, seed: int):
    """Unit-norm keys and labels with every class in blocks of 2x2 and some ignored pixels."""
    generator = seeded(seed)
    keys = F.normalize(torch.randn(batch, dim, height, width, generator=generator), dim=1)
    grid = torch.randint(0, num_classes, (batch, height // 2, width // 2), generator=generator)
    labels = grid.repeat_interleave(2, 1).repeat_interleave(2, 2)
    labels[torch.rand(labels.shape, generator=generator) < 0.1] = IGNORE
    return keys, labels


# ---------------------------------------------------------------------------------------------------------------
# FIFO


def test_fifo_overwrites_the_oldest_and_keeps_order():
    memory = ClassMemory(num_classes=3, dim=2, size=5)
    for update in range(3):
        values = list(range(4 * update, 4 * update + 4))
        memory.update(*one_pixel_images(values), generator=seeded(update))
        assert int(memory.pointer[1]) == 4 * (update + 1) % 5, "pointer advances by the rows written"
    assert memory.queue[1, :, 0].tolist() == [10, 11, 7, 8, 9]
    assert stored_values(memory, 1) == [7, 8, 9, 10, 11]
    assert memory.filled.tolist() == [0, 5, 0] and memory.pointer.tolist() == [0, 2, 0]


def test_one_update_with_more_rows_than_slots_keeps_the_newest_in_order():
    memory = ClassMemory(num_classes=2, dim=2, size=5)
    memory.update(*one_pixel_images(list(range(7))))
    assert memory.queue[1, :, 0].tolist() == [5, 6, 2, 3, 4]
    assert stored_values(memory, 1) == [2, 3, 4, 5, 6]
    assert int(memory.pointer[1]) == 2 and int(memory.filled[1]) == 5


def test_pixel_update_takes_up_to_pixels_per_update_per_image_and_class_including_class_0():
    labels = torch.full((1, 4, 4), IGNORE, dtype=torch.int64).view(-1)
    labels[:3], labels[3:15] = 0, 2  # class 0: 3 pixels, class 2: 12 pixels
    labels = labels.view(1, 4, 4)
    keys = torch.randn(1, 6, 4, 4, generator=seeded())
    memory = ClassMemory(num_classes=3, dim=6, size=50, pixels_per_update=10)
    memory.update(keys, labels, generator=seeded())
    assert memory.pointer.tolist() == [3, 0, 10] and memory.filled.tolist() == [3, 0, 10]
    rows, row_labels = memory.contents()
    assert row_labels.tolist() == [0] * 3 + [2] * 10
    pixel_keys = keys.permute(0, 2, 3, 1).reshape(-1, 6)
    for row, cls in zip(rows, row_labels.tolist()):
        matches = torch.nonzero((pixel_keys == row).all(1)).squeeze(1)
        assert len(matches) == 1 and int(labels.view(-1)[matches]) == cls, "each row is a pixel of its class"
    assert torch.unique(rows, dim=0).shape[0] == 13, "no pixel twice"


def test_contents_are_only_the_filled_slots():
    memory = ClassMemory(num_classes=4, dim=3, size=20, pixels_per_update=2)
    rows, labels = memory.contents()
    assert rows.shape == (0, 3) and labels.shape == (0,)
    keys, labels = random_batch(2, 8, 8, 4, 3, seed=1)
    memory.update(keys, labels)  # global RNG
    rows, row_labels = memory.contents()
    assert rows.shape == (int(memory.filled.sum()), 3) and torch.equal(torch.bincount(row_labels), memory.filled)
    assert torch.allclose(rows.norm(dim=1), torch.ones(len(rows)))  # real pixels, no empty (zero) slots


def test_segment_kind_stores_unit_norm_region_means():
    keys, labels = random_batch(2, 6, 6, 3, 4, seed=2)
    memory = ClassMemory(num_classes=3, dim=4, size=10, kind="segment")
    memory.update(keys, labels)
    rows, row_labels = memory.contents()
    expected_rows, expected_labels = [], []
    for cls in range(3):
        for image in range(2):
            of_class = labels[image] == cls
            if of_class.any():
                mean = keys[image][:, of_class].mean(dim=1)
                expected_rows.append(mean / mean.norm())
                expected_labels.append(cls)
    assert row_labels.tolist() == expected_labels
    assert torch.allclose(rows, torch.stack(expected_rows), atol=1e-6)
    assert torch.allclose(rows.norm(dim=1), torch.ones(len(rows)))
    assert torch.equal(memory.pointer, memory.filled), "one row per (image, class), pointer += rows written"


def test_update_checks_its_inputs():
    memory = ClassMemory(num_classes=3, dim=4, size=10)
    with pytest.raises(ValueError, match="do not match"):
        memory.update(torch.randn(2, 4, 3, 3), torch.zeros(2, 3, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="outside"):
        memory.update(torch.randn(1, 4, 2, 2), torch.full((1, 2, 2), 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="kind"):
        ClassMemory(3, 4, 10, kind="region")


def test_buffers_are_in_the_state_dict():
    memory = ClassMemory(num_classes=3, dim=4, size=10)
    memory.update(*random_batch(1, 4, 4, 3, 4, seed=3))
    restored = ClassMemory(num_classes=3, dim=4, size=10)
    restored.load_state_dict(memory.state_dict())
    assert set(memory.state_dict()) == {"queue", "pointer", "filled"}
    assert all(torch.equal(a, b) for a, b in zip(memory.contents(), restored.contents()))
    memory.reset()
    assert memory.contents()[0].shape[0] == 0 and not memory.pointer.any()


def test_pixel_segment_memory_concatenates_pixel_then_segment_rows():
    keys, labels = random_batch(2, 6, 6, 3, 4, seed=4)
    both = PixelSegmentMemory(num_classes=3, dim=4, size=30, kinds="both", pixels_per_update=3)
    both.update(keys, labels, generator=seeded())
    pixel, segment = both.memories["pixel"], both.memories["segment"]
    rows, row_labels = both.contents()
    assert torch.equal(rows, torch.cat([pixel.contents()[0], segment.contents()[0]]))
    assert torch.equal(row_labels, torch.cat([pixel.contents()[1], segment.contents()[1]]))
    assert list(PixelSegmentMemory(3, 4, 30, kinds="segment").memories) == ["segment"]
    with pytest.raises(ValueError, match="valid"):
        PixelSegmentMemory(3, 4, 30, kinds="all")


# ---------------------------------------------------------------------------------------------------------------
# the reference's quirks


def reference_pointer_rule(writes: list[tuple[int, int]], size: int):
    """The released code's pixel-queue rule: a write of k rows at pointer p goes to [p, p + k) and p += 1, unless
    p + k >= size: then to the last k slots and p = 0. Returns the pointers after each write, the high-water mark per
    class and which write last filled each slot."""
    pointer, filled, owner, history = defaultdict(int), defaultdict(int), defaultdict(dict), []
    for write, (cls, count) in enumerate(writes):
        if pointer[cls] + count >= size:
            first, pointer[cls] = size - count, 0
        else:
            first, pointer[cls] = pointer[cls], pointer[cls] + 1
        for slot in range(first, first + count):
            owner[cls][slot] = write
        filled[cls] = max(filled[cls], first + count)
        history.append(dict(pointer))
    return history, filled, owner


def test_reference_quirks_reproduce_the_released_pointer_rule_and_drop_class_0():
    size, updates = 50, 60
    labels = torch.zeros(1, 5, 5, dtype=torch.int64).view(-1)  # class 0: 9 pixels, never written
    labels[9:21], labels[21:25] = 1, 2  # class 1: 12 pixels (writes of 10), class 2: 4 pixels (writes of 4)
    labels = labels.view(1, 5, 5)
    memory = ClassMemory(num_classes=3, dim=2, size=size, pixels_per_update=10, reference_quirks=True)
    writes = []
    for update in range(updates):
        keys = torch.full((1, 2, 5, 5), float(update))  # every row written by update t carries t
        memory.update(keys, labels, generator=seeded(update))
        writes += [(1, 10), (2, 4)]
        if update + 1 == 30:  # the reference's B1: 30 writes of 10 rows -> pointer 30, 39 rows filled
            assert int(memory.pointer[1]) == 30 and int(memory.filled[1]) == 39
    history, filled, owner = reference_pointer_rule(writes, size)
    assert memory.pointer.tolist() == [0, history[-1][1], history[-1][2]]
    assert memory.filled.tolist() == [0, filled[1], filled[2]]
    for cls in (1, 2):
        expected = [owner[cls][slot] // 2 for slot in range(filled[cls])]  # two writes per update
        assert memory.queue[cls, :filled[cls], 0].long().tolist() == expected


def test_reference_pointer_sequence_write_by_write():
    memory = ClassMemory(num_classes=2, dim=2, size=50, pixels_per_update=10, reference_quirks=True)
    labels = torch.ones(1, 4, 4, dtype=torch.int64)
    pointers = []
    for update in range(45):
        memory.update(torch.randn(1, 2, 4, 4), labels)
        pointers.append(int(memory.pointer[1]))
    history, _, _ = reference_pointer_rule([(1, 10)] * 45, 50)
    assert pointers == [step[1] for step in history]
    assert pointers[:3] == [1, 2, 3] and pointers[39:42] == [40, 0, 1]  # write 41 at pointer 40: 40 + 10 >= 50


def test_reference_quirks_drop_class_0_in_the_segment_queue_too():
    keys, labels = random_batch(2, 6, 6, 3, 4, seed=5)
    quirky = ClassMemory(num_classes=3, dim=4, size=10, kind="segment", reference_quirks=True)
    fixed = ClassMemory(num_classes=3, dim=4, size=10, kind="segment")
    quirky.update(keys, labels)
    fixed.update(keys, labels)
    assert int(quirky.filled[0]) == 0 and int(fixed.filled[0]) > 0
    assert torch.equal(quirky.queue[1:], fixed.queue[1:]) and torch.equal(quirky.filled[1:], fixed.filled[1:])


def position_coded_image(side: int = 4):
    """One ``side`` x ``side`` image whose pixel at raster position i has the key (i, 1); class 1 on the last row,
    class 2 on the row before, class 0 elsewhere."""
    positions = torch.arange(side * side, dtype=torch.float32).view(1, 1, side, side)
    keys = torch.cat([positions, torch.ones_like(positions)], dim=1)
    labels = torch.zeros(1, side, side, dtype=torch.int64)
    labels[0, -1], labels[0, -2] = 1, 2
    return keys, labels


def test_reference_quirks_write_the_pixel_queue_from_the_first_raster_positions():
    # the reference writes this_feat[:, perm[:K]], perm a permutation of the class's n pixels: K random raster
    # positions among 0..n-1 of the whole image, whatever their class, under the class's label
    keys, labels = position_coded_image()
    seen = set()
    for seed in range(20):
        quirky = ClassMemory(num_classes=3, dim=2, size=8, pixels_per_update=2, reference_quirks=True)
        fixed = ClassMemory(num_classes=3, dim=2, size=8, pixels_per_update=2)
        quirky.update(keys, labels, generator=seeded(seed))
        fixed.update(keys, labels, generator=seeded(seed))
        for cls, own_positions in ((1, {12, 13, 14, 15}), (2, {8, 9, 10, 11})):
            written = quirky.queue[cls, :int(quirky.filled[cls]), 0].long().tolist()
            assert len(written) == 2 and len(set(written)) == 2 and set(written) <= {0, 1, 2, 3}
            assert set(fixed.queue[cls, :int(fixed.filled[cls]), 0].long().tolist()) <= own_positions
            seen |= set(written)
    assert seen == {0, 1, 2, 3}  # uniform over the first n = 4 positions


def test_reference_quirks_keep_the_zero_rows_of_class_0_in_the_contents():
    keys, labels = random_batch(2, 6, 6, 3, 4, seed=6)
    for kind in ("pixel", "segment"):
        memory = ClassMemory(num_classes=3, dim=4, size=10, kind=kind, reference_quirks=True)
        for _ in range(2):  # before and after a write: class 0 is never written, its 10 zero rows always take part
            rows, row_labels = memory.contents()
            class_0 = row_labels == 0
            assert int(class_0.sum()) == 10 and torch.equal(rows[class_0], torch.zeros(10, 4))
            assert torch.equal(rows[~class_0], memory.queue[1:][torch.arange(10) < memory.filled[1:, None]])
            memory.update(keys, labels, generator=seeded())
        assert int(memory.filled[0]) == 0
    both = PixelSegmentMemory(3, 4, 10, kinds="both", reference_quirks=True)
    rows, row_labels = both.contents()
    assert int((row_labels == 0).sum()) == 20 and not rows.any()  # one zero block per queue, as the reference's
    assert ClassMemory(num_classes=3, dim=4, size=10).contents()[0].shape == (0, 4)  # without quirks: nothing


# ---------------------------------------------------------------------------------------------------------------
# DDP: every rank writes every rank's rows, in rank order


DDP_MEMORIES = {
    "pixel": dict(kind="pixel", pixels_per_update=3),
    "segment": dict(kind="segment"),
    "pixel_quirks": dict(kind="pixel", pixels_per_update=3, reference_quirks=True),
}


def rank_batch(rank: int):
    """Different batch sizes and class layouts per rank, so that the ranks write different numbers of rows."""
    return random_batch(2 if rank == 0 else 1, 8, 8, 4, 5, seed=10 + rank)


def build_ddp_memories() -> dict[str, ClassMemory]:
    return {name: ClassMemory(num_classes=4, dim=5, size=12, **options) for name, options in DDP_MEMORIES.items()}


def ddp_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        memories = build_ddp_memories()
        for step in range(2):
            keys, labels = rank_batch(rank)
            for memory in memories.values():
                memory.update(keys + step, labels, generator=seeded(100 * step + rank))
        torch.save({name: memory.state_dict() for name, memory in memories.items()}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.multiprocess
def test_ddp_ranks_hold_identical_memory_equal_to_sequential_updates(tmp_path):
    mp.spawn(ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    rank0, rank1 = (torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2))
    single = build_ddp_memories()
    for step in range(2):
        for rank in range(2):  # rank 0's rows, then rank 1's, with the same random choices
            keys, labels = rank_batch(rank)
            for memory in single.values():
                memory.update(keys + step, labels, generator=seeded(100 * step + rank))
    for name, memory in single.items():
        for buffer, value in memory.state_dict().items():
            assert torch.equal(rank0[name][buffer], rank1[name][buffer]), f"{name}.{buffer} differs between ranks"
            assert torch.equal(rank0[name][buffer], value), f"{name}.{buffer} differs from sequential updates"
        assert int(memory.filled.sum()) > 0
