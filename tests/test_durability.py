"""Nothing lost, nothing hung, nothing executed: checkpoints load with ``weights_only=True``, the step log and
metrics survive a kill, a damaged last checkpoint falls back to the previous one (and the run still ends bit-identical
to an uninterrupted one), checkpoint files follow the umask, stale temporary files are cleaned, a damaged run does not
hide the store, and every CLI path trains under the run folder's lock."""

import json
import os
import pickle
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from contrastseg import runs
from contrastseg.config import smoke
from contrastseg.engine import read_log, train
from contrastseg.engine.checkpoint import load_checkpoint, save_checkpoint
from contrastseg.engine.train import build_model, build_optimizer, checkpoint_state, read_metrics
from contrastseg.methods import build_objective

TINY = dict(steps=8, checkpoint_every=2, num_train=8, num_val=4, batch_size=4, image_size=64, num_threads=1)


def final_weights(run_dir: Path) -> dict:
    return load_checkpoint(run_dir / "last.ckpt")["model"]


def assert_same_run(dir_a: Path, dir_b: Path) -> None:
    assert read_metrics(dir_a)["val"] == read_metrics(dir_b)["val"]
    assert [r["loss"] for r in read_log(dir_a)] == [r["loss"] for r in read_log(dir_b)]
    weights_a, weights_b = final_weights(dir_a), final_weights(dir_b)
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[name], weights_b[name]) for name in weights_a)


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory) -> Path:
    """An uninterrupted tiny run, to compare resumed ones against."""
    run_dir = tmp_path_factory.mktemp("whole")
    train(smoke(**TINY), run_dir, progress=False)
    return run_dir


def interrupted_run(run_dir: Path, at: int = 6) -> Path:
    """The tiny run stopped after step ``at`` (checkpoints every 2 steps: last.ckpt at ``at``, previous.ckpt 2
    before)."""
    assert train(smoke(**TINY), run_dir, progress=False, interrupt_at=at) is None
    return run_dir


# --- checkpoints run no code ------------------------------------------------------------------------------------


class Payload:
    """Unpickling this object would create the file ``marker``."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_a_crafted_checkpoint_is_refused_without_running_its_code(tmp_path, runs_root):
    marker = tmp_path / "payload-ran"
    result = runs.get_or_train(smoke(**TINY | dict(steps=2)), progress=False)  # a finished run ...
    torch.save({"step": 2, "model": Payload(str(marker))}, result.checkpoint)  # ... whose checkpoint is crafted
    with pytest.raises(Exception) as refused:
        result.load_model()
    assert not marker.exists(), "loading the checkpoint ran its code"
    assert isinstance(refused.value, RuntimeError)
    assert re.search(rf"{re.escape(str(result.checkpoint))} cannot be read \(refused by the weights-only unpickler",
                     str(refused.value)), refused.value

    plain = tmp_path / "plain.ckpt"
    plain.write_bytes(pickle.dumps({"step": 1, "model": Payload(str(marker))}, protocol=2))  # a plain pickle
    with pytest.raises(RuntimeError, match=r"plain\.ckpt cannot be read"):
        load_checkpoint(plain)
    assert not marker.exists()


def test_resume_refuses_a_crafted_checkpoint(tmp_path):
    marker = tmp_path / "payload-ran"
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    torch.save({"step": 4, "model": Payload(str(marker))}, run_dir / "last.ckpt")
    with pytest.raises(Exception) as refused:
        train(smoke(**TINY), run_dir, progress=False)
    assert not marker.exists(), "resuming ran the checkpoint's code"
    assert isinstance(refused.value, RuntimeError) and "last.ckpt cannot be read" in str(refused.value)


def test_a_training_checkpoint_round_trips_with_weights_only(tmp_path):
    interrupted_run(tmp_path, at=2)
    state = torch.load(tmp_path / "last.ckpt", weights_only=True)  # what load_checkpoint does
    assert state["step"] == 2 and state["config"] == smoke(**TINY).to_dict()
    assert isinstance(state["rng"][0]["cpu"], torch.Tensor)
    # a checkpoint as the code before this change wrote it (plain torch.save of the same state) loads too
    cfg = smoke(**TINY)
    model = build_model(cfg)
    old = checkpoint_state(cfg, model, build_objective(cfg, 9), build_optimizer(cfg, model.parameters()), 3, 1.0)
    torch.save(old, tmp_path / "old.ckpt")
    assert load_checkpoint(tmp_path / "old.ckpt")["step"] == 3


def test_a_checkpoint_with_an_object_is_not_written(tmp_path):
    with pytest.raises(TypeError, match=r"state\['extra'\]\[0\] is a .*Payload"):
        save_checkpoint({"step": 1, "extra": [Payload("x")]}, tmp_path / "last.ckpt")
    assert list(tmp_path.iterdir()) == []


# --- the step log and metrics survive a kill ---------------------------------------------------------------------


def test_a_torn_last_log_line_is_dropped_on_resume_with_a_warning(tmp_path, whole_run):
    run_dir = interrupted_run(tmp_path)
    with (run_dir / "log.jsonl").open("a") as stream:
        stream.write('{"step": 7, "lr": 0.0')  # the kill came while step 7's line was being written
    with pytest.warns(UserWarning, match=r"log\.jsonl is cut short"):
        assert [r["step"] for r in read_log(run_dir)] == list(range(1, 7))
    with pytest.warns(UserWarning, match=str(run_dir / "log.jsonl")):
        train(smoke(**TINY), run_dir, progress=False)
    assert [r["step"] for r in read_log(run_dir)] == list(range(1, 9))
    assert_same_run(whole_run, run_dir)


def test_a_damaged_log_line_before_the_last_names_the_file_and_line(tmp_path):
    run_dir = interrupted_run(tmp_path)
    lines = (run_dir / "log.jsonl").read_text().splitlines()
    lines[2] = lines[2][:10]
    (run_dir / "log.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"line 3 of the step log .*log\.jsonl"):
        read_log(run_dir)


def test_log_lines_are_fsynced_and_the_rewrites_atomic(tmp_path, monkeypatch):
    synced, replaced = [], []
    real_fsync, real_replace = os.fsync, os.replace

    def spy_fsync(handle):
        synced.append(os.readlink(f"/proc/self/fd/{handle}") if os.path.exists("/proc/self/fd") else handle)
        real_fsync(handle)

    def spy_replace(source, target):
        replaced.append(Path(target).name)
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", spy_fsync)
    monkeypatch.setattr(os, "replace", spy_replace)
    train(smoke(**TINY), tmp_path, progress=False)
    if os.path.exists("/proc/self/fd"):
        assert sum(path == str(tmp_path / "log.jsonl") for path in synced) == TINY["steps"]
    assert {"log.jsonl", "metrics.json", "last.ckpt", "previous.ckpt"} <= set(replaced)


def test_damaged_metrics_name_the_file_and_do_not_hide_the_store(runs_root):
    good = runs.get_or_train(smoke(**TINY | dict(steps=2)), progress=False)
    broken = runs.get_or_train(smoke(**TINY | dict(steps=2, seed=1)), progress=False)
    (broken.run_dir / "metrics.json").write_text('{"val": {"miou": 0.')
    with pytest.raises(ValueError, match=str(broken.run_dir / "metrics.json")):
        runs.get_or_train(broken.config, progress=False)
    with pytest.warns(UserWarning, match=rf"1 finished run\(s\).*broken.*{broken.run_dir.name}"):
        assert [r.run_dir for r in runs.finished_runs()] == [good.run_dir]
    assert [(b.run_dir, "metrics.json" in b.problem) for b in runs.broken_runs()] == [(broken.run_dir, True)]


# --- two checkpoints: a damaged last one falls back to the previous ----------------------------------------------


def test_a_damaged_last_checkpoint_falls_back_to_the_previous_and_ends_identical(tmp_path, whole_run):
    run_dir = interrupted_run(tmp_path)
    assert load_checkpoint(run_dir / "last.ckpt")["step"] == 6
    assert load_checkpoint(run_dir / "previous.ckpt")["step"] == 4
    (run_dir / "last.ckpt").write_bytes(b"\0" * 100)  # a damaged file
    with pytest.warns(UserWarning, match=r"last\.ckpt.*continues from .*previous\.ckpt \(step 4\)"):
        train(smoke(**TINY), run_dir, progress=False)
    assert_same_run(whole_run, run_dir)
    assert (run_dir / "damaged.ckpt").read_bytes() == b"\0" * 100
    assert not (run_dir / "previous.ckpt").exists()  # a finished run keeps its final checkpoint only


def test_a_missing_last_checkpoint_falls_back_to_the_previous(tmp_path, whole_run):
    run_dir = interrupted_run(tmp_path)
    (run_dir / "last.ckpt").unlink()  # killed between moving last.ckpt to previous.ckpt and writing the new one
    with pytest.warns(UserWarning, match=r"no .*last\.ckpt.*previous\.ckpt \(step 4\)"):
        train(smoke(**TINY), run_dir, progress=False)
    assert_same_run(whole_run, run_dir)


def test_a_non_finite_last_checkpoint_falls_back_to_the_previous(tmp_path, whole_run):
    run_dir = interrupted_run(tmp_path)
    state = load_checkpoint(run_dir / "last.ckpt")
    next(iter(state["model"].values())).fill_(float("nan"))  # as the code before the divergence guard could write
    torch.save(state, run_dir / "last.ckpt")
    with pytest.warns(UserWarning, match=r"NaN or inf.*previous\.ckpt \(step 4\)"):
        train(smoke(**TINY), run_dir, progress=False)
    assert_same_run(whole_run, run_dir)


def test_no_usable_checkpoint_names_both_files(tmp_path):
    run_dir = interrupted_run(tmp_path)
    (run_dir / "last.ckpt").write_bytes(b"damaged")
    (run_dir / "previous.ckpt").write_bytes(b"damaged too")
    with pytest.raises(RuntimeError, match=r"last\.ckpt.*previous\.ckpt"):
        train(smoke(**TINY), run_dir, progress=False)


# --- permissions and stale temporary files -----------------------------------------------------------------------


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_checkpoints_follow_the_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        save_checkpoint({"step": 1}, tmp_path / "last.ckpt")
        (tmp_path / "plain").write_text("")
    finally:
        os.umask(previous)
    assert (tmp_path / "last.ckpt").stat().st_mode & 0o777 == (tmp_path / "plain").stat().st_mode & 0o777 == 0o640


def test_stale_temporary_files_are_removed_on_resume(tmp_path, whole_run):
    run_dir = interrupted_run(tmp_path)
    stale = [run_dir / ".last.ckpt.a1b2c3.tmp", run_dir / ".log.jsonl.123.4567abcd.tmp",
             run_dir / ".metrics.json.99.tmp"]
    for path in stale:
        path.write_bytes(b"half a file")
    unrelated = run_dir / "notes.tmp"
    unrelated.write_text("mine")
    train(smoke(**TINY), run_dir, progress=False)
    assert not any(path.exists() for path in stale) and unrelated.exists()
    assert_same_run(whole_run, run_dir)


# --- every CLI path goes through the store's lock ----------------------------------------------------------------


def test_the_cli_with_a_run_dir_waits_for_the_lock_and_does_not_train_a_finished_run(tmp_path, runs_root,
                                                                                     monkeypatch, capsys):
    from contrastseg.train import main

    cfg = smoke(**TINY)
    (tmp_path / "run.json").write_text(json.dumps(cfg.to_dict()))
    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    monkeypatch.setattr(runs, "train", lambda *a, **k: pytest.fail("trained while another process held the run"))
    outcome = []

    def invoke():
        try:
            outcome.append(main(["--config", str(tmp_path / "run.json"), "--run-dir", str(run_dir), "--no-progress"]))
        except BaseException as error:  # noqa: BLE001 (the thread reports whatever stopped it)
            outcome.append(error)

    with runs.run_lock(run_dir):  # "another process" is training this run
        waiter = threading.Thread(target=invoke)
        waiter.start()
        time.sleep(1.0)
        assert waiter.is_alive() and not outcome, outcome
        (run_dir / "metrics.json").write_text(json.dumps({"val": {"miou": 0.5, "pixel_accuracy": 0.75}, "steps": 8,
                                                          "train_seconds": 1.0}))
    waiter.join(timeout=30)
    assert outcome == [0]
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["run_dir"] == str(run_dir) and printed["miou"] == 0.5


@pytest.mark.multiprocess
def test_two_concurrent_cli_runs_train_a_run_dir_once(tmp_path, whole_run):
    cfg = smoke(**TINY)
    (tmp_path / "run.json").write_text(json.dumps(cfg.to_dict()))
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "contrastseg.train", "--config", str(tmp_path / "run.json"), "--run-dir",
               str(run_dir), "--no-progress"]
    environment = dict(os.environ, OMP_NUM_THREADS="1")
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=environment) for _ in range(2)]
    outputs = [process.communicate(timeout=300) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    printed = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert printed[0] == printed[1]
    assert [r["step"] for r in read_log(run_dir)] == list(range(1, TINY["steps"] + 1))
    assert json.loads((run_dir / "config.json").read_text()) == cfg.to_dict()
    assert_same_run(whole_run, run_dir)


@pytest.mark.multiprocess
def test_the_cli_under_torchrun_takes_the_lock_on_process_0_and_every_process_follows(tmp_path):
    cfg = smoke(**TINY | dict(num_devices=2, device="cpu"))
    (tmp_path / "run.json").write_text(json.dumps(cfg.to_dict()))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m",
               "contrastseg.train", "--config", str(tmp_path / "run.json"), "--run-dir", str(run_dir), "--no-progress"]
    environment = {name: value for name, value in os.environ.items() if name != runs.LOCKED_RUN_ENV}
    errors = tmp_path / "stderr.txt"
    with runs.run_lock(run_dir), errors.open("w") as error_stream:  # "another process" is training this run
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=error_stream, text=True,
                                   env=environment | {"OMP_NUM_THREADS": "1"})
        deadline = time.time() + 120
        while process.poll() is None and time.time() < deadline and "waiting for another" not in errors.read_text():
            time.sleep(0.2)
        assert "waiting for another" in errors.read_text(), errors.read_text()
        time.sleep(1)
        assert process.poll() is None and not (run_dir / "log.jsonl").exists()
        (run_dir / "metrics.json").write_text(json.dumps({"val": {"miou": 0.5, "pixel_accuracy": 0.75}, "steps": 8,
                                                          "train_seconds": 1.0, "num_devices": 2}))
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 0, errors.read_text()
    assert [json.loads(line)["miou"] for line in out.strip().splitlines()] == [0.5]  # printed once, by process 0
    assert not (run_dir / "log.jsonl").exists()
