"""TensorBoard scalars of a run, written beside its step log while it trains: a view of ``log.jsonl`` and
``metrics.json``, never the record.

Process 0 of every run writes event files into ``<run folder>/tensorboard/`` (``TENSORBOARD_DIR``), so that
``tensorboard --logdir <runs root>/store`` (``make tensorboard``) shows every run of the store, each under its folder's
name (``ce-1a2b3c4d5e6f/tensorboard``). The tags, at the step of the log line they come from (steps count from 1, as
in the log):

* ``loss/<term>`` for every loss term of the line and ``loss/total`` for the weighted total (the line's "loss");
* ``train/lr`` (the learning rate of the step) and ``train/step_seconds`` (its wall time);
* ``diagnostics/<name>`` for what the method did at that step (the objective's ``diagnostics()``);
* ``val/<metric>`` for the learning-curve points (``eval_every``), and at the last step the final val metrics of
  ``metrics.json``, per-class lists as ``val/<metric>/<class name>``.

Which values become scalars (``numeric_leaves``): numbers as they are, booleans as 0 or 1, dicts and lists one level
of tag per key or position (a list of per-class values by class name where the names are known); text and None
(a class absent from the val split) are left out. TensorBoard keeps a scalar as a float32, so a value reads back as
the float32 nearest to the logged one.

Resume: a resumed run replays the steps after its checkpoint, and its log keeps only the lines up to that step. The
writer of the resumed process starts its event file with TensorBoard's restart marker at the first replayed step
(``SummaryWriter``'s ``purge_step``), and TensorBoard then hides the events of the earlier files from that step on,
so each step appears once, with the values of the resumed run. The marker acts on the files read before its own, and
TensorBoard reads a folder's event files in the order of their names, which begin with the second their writer was
created; a writer created in the same second as the newest file of the folder waits for the next second
(``wait_for_a_later_second``), so the resumed file always sorts last. ``make tensorboard`` starts TensorBoard with
``--load_fast=false``: its Python loader honours the marker, the faster Rust loader ignores it.

Cost: a step's scalars go into the event file as one event; process 0 spends about 0.15 ms a step on it, for 4 to 21
scalars (``benchmarks/tensorboard_cost.py``, on a 2-core CPU shared with other jobs; a smoke step takes 20 ms and
more), which the step's own seconds do not include.

Durability: the writer's thread appends each event to the file as it comes, so a kill loses at most the few still
queued; the queue is drained at every checkpoint and when the run ends or is interrupted, so every event up to the
last checkpoint is in the file, and the events a kill may lose are of steps that the resumed run writes again. A
run that stops on an error (a diverged loss) has its writer closed when the writer is collected, or at exit. The step
log keeps its own guarantees (every line fsynced), whatever happens to the event files.
"""

from __future__ import annotations

import re
import time
import weakref
from collections.abc import Mapping, Sequence
from numbers import Real
from pathlib import Path

TENSORBOARD_DIR = "tensorboard"
"""The folder of a run's event files, inside the run folder."""
TOTAL_TAG = "loss/total"
"""The tag of the weighted total loss (the log line's "loss")."""
LINE_TAGS = {"lr": "train/lr", "seconds": "train/step_seconds"}
"""The tags of the fields of a log line that are neither loss terms nor groups."""
LINE_GROUPS = ("diagnostics", "val")
"""The fields of a log line that hold groups of values: each becomes tags ``<field>/<name>``."""
EVENT_FILE_SECOND = re.compile(r"tfevents\.(\d+)\.")
"""The creation second in an event file's name (``events.out.tfevents.<second>.<host>.<process>.<counter>``)."""


def numeric_leaves(value, prefix: str, item_names: Sequence[str] = ()) -> dict[str, float]:
    """The numbers in ``value`` as scalars by tag: ``{prefix: value}`` for a number (a boolean as 0.0 or 1.0),
    ``prefix/<key>/...`` for each entry of a dict, ``prefix/<name>`` for each item of a list or tuple (named by
    ``item_names`` by position, else by its index); text, None and other values are left out.

    ``numeric_leaves({"anchors": 12, "fill": {"pixel": 0.5}, "note": "x"}, "diagnostics")`` is
    ``{"diagnostics/anchors": 12.0, "diagnostics/fill/pixel": 0.5}``.
    """
    if isinstance(value, Real):  # bool is a Real too: 0.0 or 1.0
        return {prefix: float(value)}
    if isinstance(value, Mapping):
        return {tag: number for key, item in value.items()
                for tag, number in numeric_leaves(item, f"{prefix}/{key}", item_names).items()}
    if isinstance(value, (list, tuple)):
        names = [item_names[i] if i < len(item_names) else str(i) for i in range(len(value))]
        return {tag: number for name, item in zip(names, value)
                for tag, number in numeric_leaves(item, f"{prefix}/{name}").items()}
    return {}


def line_scalars(line: Mapping) -> dict[str, float]:
    """The scalars of one step-log line (``engine.train.StepLog``), by tag: every loss term as ``loss/<term>``,
    the total as ``TOTAL_TAG``, the learning rate and the step's seconds (``LINE_TAGS``), the diagnostics and the
    learning-curve point (``LINE_GROUPS``) by ``numeric_leaves``. The line's "step" is where they go, not a scalar.
    """
    scalars = {}
    for name, value in line.items():
        if name == "step":
            continue
        if name in LINE_GROUPS:
            scalars |= numeric_leaves(value, name)
        elif name in LINE_TAGS:
            scalars |= numeric_leaves(value, LINE_TAGS[name])
        else:
            scalars |= numeric_leaves(value, TOTAL_TAG if name == "loss" else f"loss/{name}")
    return scalars


def wait_for_a_later_second(folder: Path) -> None:
    """Wait until the clock is past the creation second of every event file in ``folder`` (at most a second,
    and only when one was created in the current second), so that a file created now sorts after them by name."""
    seconds = [int(match.group(1)) for path in folder.glob("*tfevents*")
               if (match := EVENT_FILE_SECOND.search(path.name))]
    if seconds:
        time.sleep(min(max(max(seconds) + 1 - time.time(), 0.0), 1.0))


def scalar_summary(scalars: Mapping[str, float]):
    """One TensorBoard ``Summary`` protocol buffer holding ``scalars`` (by tag) as simple values."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    return Summary(value=[Summary.Value(tag=tag, simple_value=value) for tag, value in scalars.items()])


class ScalarBoard:
    """The TensorBoard writer of one training process (process 0 of a run): ``write_line`` for each step-log line,
    ``write_metrics`` for the final val metrics, ``flush`` at checkpoints, ``close`` at the end.

    Args:
        folder: where the event files go (``<run folder>/tensorboard``); created when missing.
        start_step: the step the run continues from (0 for a fresh run); the events that earlier processes wrote
            for the steps after it are hidden (``purge_step``), since the run writes them again.
    """

    def __init__(self, folder: Path, start_step: int):
        from torch.utils.tensorboard import SummaryWriter  # tensorboard loads only where a run trains

        folder.mkdir(parents=True, exist_ok=True)
        wait_for_a_later_second(folder)
        self.folder = folder
        self.writer = SummaryWriter(str(folder), purge_step=start_step + 1)
        weakref.finalize(self, self.writer.close)  # its thread ends also when a run stops on an error

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        """Add ``scalars`` (by tag) at ``step``, as one event (``add_scalar`` per tag would write one event each,
        at several times the cost and twice the file size)."""
        self.writer.file_writer.add_summary(scalar_summary(scalars), step)

    def write_line(self, line: Mapping) -> None:
        """Add the scalars of a step-log line (``line_scalars``) at its step."""
        self.write(line["step"], line_scalars(line))

    def write_metrics(self, step: int, val: Mapping, class_names: Sequence[str] = ()) -> None:
        """Add the final val metrics (``metrics.json``'s "val") at ``step`` as ``val/<metric>``, per-class lists
        as ``val/<metric>/<class name>`` (``numeric_leaves``)."""
        self.write(step, numeric_leaves(val, "val", class_names))

    def flush(self) -> None:
        """Write the buffered events to the event file."""
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()
