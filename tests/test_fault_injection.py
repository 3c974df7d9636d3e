"""Fault injection: a small run of every method is killed three times (SIGKILL, in a real process) and resumed, and it
ends bit-identical to an uninterrupted run: the same val metrics, the same loss at every step, the same weights (the
model's, the EMA teacher's and the objective's state: memory banks, RC²L's projector).

The three kills of a run, at steps drawn per method from a seeded generator:
1. half-way through writing a checkpoint (the process dies inside ``torch.save``, leaving a partial temporary file);
2. right after the log line of a step (the steps since the last checkpoint are replayed);
3. half-way through writing the log line of a step (the line is torn; the resume drops it with a warning).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from contrastseg.config import smoke
from contrastseg.engine import read_log, train
from contrastseg.engine.checkpoint import load_checkpoint
from contrastseg.engine.train import read_metrics

pytestmark = pytest.mark.multiprocess  # every test trains in a subprocess that kills itself

STEPS, CHECKPOINT_EVERY = 24, 4
COMMON = dict(steps=STEPS, checkpoint_every=CHECKPOINT_EVERY, num_train=16, num_val=4, batch_size=4, image_size=64,
              num_threads=1)
MASK_CLASSIFICATION = dict(head="mask_classification", num_queries=8, mask_dim=16, decoder_layers=1, proj_dim=8,
                           optimizer="adamw", lr=1e-3)
METHODS = {
    "ce": dict(method="ce"),
    "pixel_contrast": dict(method="pixel_contrast", memory="both"),
    "contextrast": dict(method="contextrast"),
    "mask_classification": dict(method="mask_classification", **MASK_CLASSIFICATION, label_fraction=0.5),
    "rc2l": dict(method="rc2l", **MASK_CLASSIFICATION, label_fraction=0.5, confidence_threshold=0.2,
                 cutmix_probability=1.0),
}

KILLED_TRAINING = r"""
import importlib, io, json, os, signal, sys

from contrastseg.config import ExperimentConfig

checkpoint = importlib.import_module("contrastseg.engine.checkpoint")
engine = importlib.import_module("contrastseg.engine.train")  # the module (contrastseg.engine.train is also a function)

cfg = ExperimentConfig(**json.loads(sys.argv[1]))
run_dir, fault, at = sys.argv[2], sys.argv[3], int(sys.argv[4])


def die():
    os.kill(os.getpid(), signal.SIGKILL)


if fault == "checkpoint":  # the checkpoint of step `at` is cut off half-way through its bytes
    real_save = checkpoint.torch.save

    def save(state, stream):
        if isinstance(state, dict) and state.get("step") == at:
            buffer = io.BytesIO()
            real_save(state, buffer)
            stream.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            stream.flush()
            die()
        real_save(state, stream)

    checkpoint.torch.save = save
else:  # "step": killed after step `at` is logged; "torn-log": killed while its log line is written
    real_write = engine.StepLog.write

    def write(self, record):
        if record["step"] == at:
            if fault == "torn-log":
                with self.path.open("a", encoding="utf-8") as stream:
                    stream.write(json.dumps(record)[:25])
                    stream.flush()
                    os.fsync(stream.fileno())
                die()
            real_write(self, record)
            die()
        real_write(self, record)

    engine.StepLog.write = write
engine.train(cfg, run_dir, progress=False)
sys.exit(3)  # the kill did not happen
"""


def kill_during_training(cfg, run_dir: Path, fault: str, at: int) -> None:
    """Train ``cfg`` into ``run_dir`` in a subprocess that SIGKILLs itself at ``fault`` of step ``at``."""
    finished = subprocess.run([sys.executable, "-c", KILLED_TRAINING, json.dumps(cfg.to_dict()), str(run_dir), fault,
                               str(at)], capture_output=True, text=True, timeout=600)
    assert finished.returncode == -9, f"{fault} at step {at}: exit {finished.returncode}\n{finished.stderr[-3000:]}"


def kill_steps(method: str) -> tuple[int, int, int]:
    """The steps of the three kills: a checkpoint step, then a step after the checkpoint that the first kill left,
    then one after the checkpoint that the second left (each resumed process reaches its kill)."""
    generator = np.random.default_rng(sorted(METHODS).index(method))
    checkpoint_step = CHECKPOINT_EVERY * int(generator.integers(1, 3))  # step 4 or 8
    after_step = int(generator.integers(checkpoint_step + 1, checkpoint_step + 2 * CHECKPOINT_EVERY))
    torn_step = int(generator.integers(after_step + 1, STEPS))
    return checkpoint_step, after_step, torn_step


def training_tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the final state that a run keeps: model, teacher and objective, by dotted name."""
    state = load_checkpoint(run_dir / "last.ckpt")
    return {f"{part}.{name}": value for part in ("model", "teacher", "objective")
            for name, value in (state.get(part) or {}).items() if isinstance(value, torch.Tensor)}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_three_kills_resume_to_the_uninterrupted_run(method, tmp_path):
    cfg = smoke(**COMMON, **METHODS[method])
    whole = train(cfg, tmp_path / "whole", progress=False)
    killed = tmp_path / "killed"
    checkpoint_step, after_step, torn_step = kill_steps(method)
    kill_during_training(cfg, killed, "checkpoint", checkpoint_step)
    if checkpoint_step > CHECKPOINT_EVERY:  # the checkpoint before the killed write is intact
        assert load_checkpoint(killed / "last.ckpt")["step"] == checkpoint_step - CHECKPOINT_EVERY
    else:
        assert not (killed / "last.ckpt").exists()
    assert list(killed.glob(".last.ckpt.*.tmp")), "the kill left a partial temporary checkpoint"
    kill_during_training(cfg, killed, "step", after_step)
    assert not list(killed.glob(".last.ckpt.*.tmp")), "the resume removed the stale temporary file"
    kill_during_training(cfg, killed, "torn-log", torn_step)
    with pytest.warns(UserWarning, match="cut short"):
        resumed = train(cfg, killed, progress=False)

    assert resumed["val"] == whole["val"] == read_metrics(killed)["val"]
    assert [r["step"] for r in read_log(killed)] == list(range(1, STEPS + 1))
    assert [r["loss"] for r in read_log(killed)] == [r["loss"] for r in read_log(tmp_path / "whole")]
    expected, got = training_tensors(tmp_path / "whole"), training_tensors(killed)
    assert expected.keys() == got.keys() and len(expected) > 0
    assert [name for name in expected if not torch.equal(expected[name], got[name])] == []
