"""Training loop: resume equivalence, NaN handling, atomic checkpoints."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from contrastseg.config import smoke
from contrastseg.engine import NonFiniteLossError, read_log, train
from contrastseg.engine.checkpoint import load_checkpoint, save_checkpoint
from contrastseg.objectives import CrossEntropyObjective

TINY = dict(steps=12, checkpoint_every=4, num_train=16, num_val=4, batch_size=4, image_size=64)


def final_weights(run_dir):
    return load_checkpoint(run_dir / "last.ckpt")["model"]


def assert_same_run(dir_a, dir_b):
    metrics_a = json.loads((dir_a / "metrics.json").read_text())
    metrics_b = json.loads((dir_b / "metrics.json").read_text())
    assert metrics_a["val"] == metrics_b["val"]
    assert [r["loss"] for r in read_log(dir_a)] == [r["loss"] for r in read_log(dir_b)]
    weights_a, weights_b = final_weights(dir_a), final_weights(dir_b)
    assert all(torch.equal(weights_a[name], weights_b[name]) for name in weights_a)


def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(tmp_path):
    cfg = smoke(**TINY)
    train(cfg, tmp_path / "whole", progress=False)
    assert train(cfg, tmp_path / "split", progress=False, interrupt_at=6) is None  # checkpoint at 4, steps 5-6 lost
    assert load_checkpoint(tmp_path / "split" / "last.ckpt")["step"] == 4
    train(cfg, tmp_path / "split", progress=False)
    assert [r["step"] for r in read_log(tmp_path / "split")] == list(range(1, 13))
    assert_same_run(tmp_path / "whole", tmp_path / "split")


@pytest.mark.multiprocess
def test_a_killed_process_resumes_to_the_same_result(tmp_path):
    cfg = smoke(steps=60, checkpoint_every=5, num_train=16, num_val=4, batch_size=4)
    killed = tmp_path / "killed"
    script = (f"from contrastseg.config import ExperimentConfig; from contrastseg.engine import train; "
              f"train(ExperimentConfig(**{cfg.to_dict()!r}), {str(killed)!r}, progress=False)")
    process = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.time() + 120
    while not (killed / "last.ckpt").exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    step_at_kill = load_checkpoint(killed / "last.ckpt")["step"]
    assert step_at_kill < cfg.steps, "the process finished before it could be killed; raise cfg.steps"
    train(cfg, killed, progress=False)
    train(cfg, tmp_path / "whole", progress=False)
    assert_same_run(tmp_path / "whole", killed)


class NaNAtStep(CrossEntropyObjective):
    def forward(self, outputs, labels, step, unlabeled=None):
        terms = super().forward(outputs, labels, step)
        if step == 5:
            terms["ce"] = terms["ce"] * float("nan")
        return terms


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, register_objective):
    register_objective("nan_at_5", NaNAtStep)
    cfg = smoke(method="nan_at_5", **TINY)
    with pytest.raises(NonFiniteLossError, match=r"step 6 \(ce=nan.*last good checkpoint .*last.ckpt \(step 4\)"):
        train(cfg, tmp_path, progress=False)
    state = load_checkpoint(tmp_path / "last.ckpt")
    assert state["step"] == 4
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert not (tmp_path / "metrics.json").exists()


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    save_checkpoint({"step": 1}, path)

    def broken_save(obj, stream):
        stream.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"step": 2}, path)
    assert load_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_corrupt_checkpoint_error_names_the_file(tmp_path):
    path = tmp_path / "last.ckpt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="last.ckpt"):
        load_checkpoint(path)


def test_a_checkpoint_of_another_config_is_not_resumed(tmp_path):
    train(smoke(**TINY), tmp_path, progress=False, interrupt_at=4)
    with pytest.raises(ValueError, match="belongs to run key"):
        train(smoke(**TINY, seed=1), tmp_path, progress=False)


def test_channels_last_and_compiled_training_compute_the_same_run(tmp_path, monkeypatch):
    from contrastseg.engine import speed

    monkeypatch.setattr(speed, "COMPILE_BACKEND", "eager")  # inductor needs a C++ compiler; the wiring is the same
    cfg = smoke(**TINY | dict(steps=3))
    plain = train(cfg, tmp_path / "plain", progress=False)
    faster = train(cfg.replace(channels_last=True, compile=True, speed="fast"), tmp_path / "fast", progress=False)
    plain_losses = [r["loss"] for r in read_log(tmp_path / "plain")]
    assert [r["loss"] for r in read_log(tmp_path / "fast")] == pytest.approx(plain_losses, rel=1e-3)
    assert faster["val"]["miou"] == pytest.approx(plain["val"]["miou"], abs=1e-3)
    weights = final_weights(tmp_path / "fast")
    assert set(weights) == set(final_weights(tmp_path / "plain"))  # no "_orig_mod." prefixes from torch.compile
    speed.configure_kernels("deterministic")
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
