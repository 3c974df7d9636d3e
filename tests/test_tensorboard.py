"""TensorBoard scalars of every run, read back from the event files with TensorBoard's own reader and compared with
the run's ``log.jsonl`` and ``metrics.json``: every loss term and the total at every step, the learning rate, the
step seconds, the diagnostics, the learning curve and the final val metrics; after an interrupted and resumed run
each step appears once, with the values of the resumed run, also after a SIGKILL that tore the event file; under
torchrun process 0 alone writes; clearing a run removes its events; the tables and the run store import without
tensorboard; ``make tensorboard`` serves the run store on 127.0.0.1."""

from __future__ import annotations

import gc
import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from contrastseg import runs
from contrastseg.config import preset, smoke
from contrastseg.data import dataset_info
from contrastseg.engine import NonFiniteLossError, read_log, train
from contrastseg.engine.tensorboard import (TENSORBOARD_DIR, ScalarBoard, numeric_leaves,
                                            wait_for_a_later_second)
from contrastseg.engine.train import read_metrics
from contrastseg.objectives import CrossEntropyObjective

TINY = dict(steps=6, checkpoint_every=2, num_train=8, num_val=4, batch_size=4, num_threads=1)
NOT_TERMS = ("step", "lr", "seconds", "diagnostics", "val", "loss")
"""The fields of a log line that are not loss terms (``StepLog``'s layout)."""


def read_events(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the run's event files as TensorBoard shows it: (step, value) by tag, in step order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / TENSORBOARD_DIR), size_guidance={"scalars": 0}).Reload()
    return {tag: [(event.step, event.value) for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def float32(value: float) -> float:
    """``value`` as TensorBoard keeps a scalar."""
    return float(np.float32(value))


def expected_scalars(log: list[dict], metrics: dict, class_names) -> dict[str, list[tuple[int, float]]]:
    """The scalars a run's log and metrics promise, by tag, in step order, as float32."""
    expected: dict[str, list[tuple[int, float]]] = {}

    def add(tag: str, step: int, value: float) -> None:
        expected.setdefault(tag, []).append((step, float32(value)))

    for line in log:
        step = line["step"]
        add("loss/total", step, line["loss"])
        for term in (name for name in line if name not in NOT_TERMS):
            add(f"loss/{term}", step, line[term])
        add("train/lr", step, line["lr"])
        add("train/step_seconds", step, line["seconds"])
        for name, value in line["diagnostics"].items():
            add(f"diagnostics/{name}", step, value)
        for name, value in line.get("val", {}).items():
            add(f"val/{name}", step, value)
    for name, value in metrics["val"].items():
        if isinstance(value, list):
            for class_name, item in zip(class_names, value):
                if item is not None:
                    add(f"val/{name}/{class_name}", metrics["steps"], item)
        else:
            add(f"val/{name}", metrics["steps"], value)
    return expected


def assert_events_match_the_record(run_dir: Path, cfg) -> dict[str, list[tuple[int, float]]]:
    """The run's event files hold exactly the scalars of its log and metrics (NaN where they hold NaN)."""
    events = read_events(run_dir)
    expected = expected_scalars(read_log(run_dir), read_metrics(run_dir), dataset_info(cfg.dataset).class_names)
    assert sorted(events) == sorted(expected)
    for tag, points in expected.items():
        assert [step for step, _ in events[tag]] == [step for step, _ in points], tag
        assert np.array_equal([value for _, value in events[tag]], [value for _, value in points],
                              equal_nan=True), tag
    return events


def test_numeric_leaves_turns_nested_values_into_tags_and_leaves_text_and_none_out():
    value = {"anchors": 12, "kept": True, "fill": {"pixel": 0.5, "segment": None}, "note": "warm-up",
             "per_class": [0.25, None, 1]}
    assert numeric_leaves(value, "diagnostics", item_names=("road", "sky")) == {
        "diagnostics/anchors": 12.0, "diagnostics/kept": 1.0, "diagnostics/fill/pixel": 0.5,
        "diagnostics/per_class/road": 0.25, "diagnostics/per_class/2": 1.0}
    assert numeric_leaves([3, "x"], "counts") == {"counts/0": 3.0}
    assert numeric_leaves("text", "note") == {}


@pytest.mark.parametrize("method", ["pixel_contrast", "rc2l"])
def test_every_logged_value_and_the_final_metrics_read_back_from_the_event_files(tmp_path, method):
    cfg = preset("smoke", method=method, eval_every=2, **TINY)
    train(cfg, tmp_path, progress=False)
    events = assert_events_match_the_record(tmp_path, cfg)
    log = read_log(tmp_path)
    assert [step for step, _ in events["loss/total"]] == [1, 2, 3, 4, 5, 6]
    assert any(tag.startswith("diagnostics/") for tag in events)  # both methods report what they did
    assert [step for step, _ in events["val/miou"]] == [2, 4, 6]  # the curve, then the final metrics
    assert events["val/miou"][-1][1] == float32(read_metrics(tmp_path)["val"]["miou"])
    assert events["train/lr"][0] == (1, float32(cfg.lr))
    terms = [name for name in log[0] if name not in NOT_TERMS]
    assert len(terms) >= 2 and all(events[f"loss/{term}"][0] == (1, float32(log[0][term])) for term in terms)


def test_a_resumed_run_shows_each_step_once_with_the_values_of_the_resumed_run(tmp_path, monkeypatch):
    cfg = preset("smoke", method="pixel_contrast", **TINY)
    original_write = ScalarBoard.write

    def write_shifted(board, step, scalars):  # what TensorBoard shows then tells the two processes apart
        original_write(board, step, {tag: value + 1000 for tag, value in scalars.items()})

    monkeypatch.setattr(ScalarBoard, "write", write_shifted)
    assert train(cfg, tmp_path, progress=False, interrupt_at=5) is None  # checkpoint at 4; step 5 is replayed
    interrupted = read_events(tmp_path)
    assert [step for step, _ in interrupted["loss/total"]] == [1, 2, 3, 4, 5]
    monkeypatch.setattr(ScalarBoard, "write", original_write)
    train(cfg, tmp_path, progress=False)

    assert len(list((tmp_path / TENSORBOARD_DIR).iterdir())) == 2  # one event file per process
    events = read_events(tmp_path)
    log = read_log(tmp_path)
    assert [line["step"] for line in log] == [1, 2, 3, 4, 5, 6]
    for tag in ("loss/total", "loss/ce", "train/lr"):
        name = {"loss/total": "loss", "loss/ce": "ce", "train/lr": "lr"}[tag]
        # steps up to the checkpoint: the interrupted process's; the replayed step 5 and step 6: the resumed one's
        assert events[tag] == [(line["step"], float32(line[name] + 1000) if line["step"] <= 4 else float32(line[name]))
                               for line in log], tag
    for tag, points in events.items():
        steps = [step for step, _ in points]
        assert steps == sorted(set(steps)), tag  # no step twice
    assert events["val/miou"] == [(6, float32(read_metrics(tmp_path)["val"]["miou"]))]


KILLED_AFTER_A_STEP = r"""
import importlib, json, os, signal, sys

from contrastseg.config import ExperimentConfig

engine = importlib.import_module("contrastseg.engine.train")  # the module (contrastseg.engine.train is also a function)
cfg, run_dir, at = ExperimentConfig(**json.loads(sys.argv[1])), sys.argv[2], int(sys.argv[3])
real_write = engine.StepLog.write


def write(self, record):
    real_write(self, record)
    if record["step"] == at:
        os.kill(os.getpid(), signal.SIGKILL)


engine.StepLog.write = write
engine.train(cfg, run_dir, progress=False)
sys.exit(3)  # the kill did not happen
"""


@pytest.mark.multiprocess
def test_a_killed_and_resumed_run_shows_each_step_once_and_its_event_files_read_back(tmp_path):
    cfg = preset("smoke", method="pixel_contrast", **TINY)
    killed = subprocess.run([sys.executable, "-c", KILLED_AFTER_A_STEP, json.dumps(cfg.to_dict()), str(tmp_path), "5"],
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode == -9, killed.stderr[-3000:]
    # the events up to the checkpoint of step 4 were flushed there; a kill while an event was written leaves a torn
    # record at the end of the file
    (event_file,) = (tmp_path / TENSORBOARD_DIR).iterdir()
    assert [step for step, _ in read_events(tmp_path)["loss/total"]][:4] == [1, 2, 3, 4]
    with event_file.open("ab") as stream:
        stream.write(event_file.read_bytes()[-40:-15])
    train(cfg, tmp_path, progress=False)
    assert_events_match_the_record(tmp_path, cfg)


@pytest.mark.multiprocess
def test_under_torchrun_process_0_alone_writes_the_events(runs_root):
    cfg = preset("smoke", **TINY | dict(steps=4, num_train=16, device="cpu", num_devices=2))
    result = runs.get_or_train(cfg, progress=False)
    assert result.metrics["num_devices"] == 2
    assert len(list((result.run_dir / TENSORBOARD_DIR).iterdir())) == 1
    assert_events_match_the_record(result.run_dir, cfg)  # the values averaged over processes, as the log has them


class NaNAtStep6(CrossEntropyObjective):
    def forward(self, outputs, labels, step, unlabeled=None):
        terms = super().forward(outputs, labels, step)
        if step == 5:  # counted from 0: the sixth step
            terms["ce"] = terms["ce"] * float("nan")
        return terms


def writer_threads() -> int:
    """The number of TensorBoard writer threads alive in this process."""
    return sum(type(thread).__name__ == "_AsyncWriterThread" for thread in threading.enumerate())


def test_a_run_that_stops_on_an_error_shows_the_steps_it_logged_and_ends_its_writer(tmp_path, register_objective):
    register_objective("nan_at_6", NaNAtStep6)
    cfg = smoke(method="nan_at_6", **TINY | dict(checkpoint_every=100))  # no checkpoint before step 6
    gc.collect()
    threads = writer_threads()
    with pytest.raises(NonFiniteLossError):
        train(cfg, tmp_path, progress=False)
    assert [step for step, _ in read_events(tmp_path)["loss/total"]] == [1, 2, 3, 4, 5]
    gc.collect()  # the stopped run's writer is collected, which closes its file and ends its thread
    assert writer_threads() == threads


def test_a_run_resumed_at_once_keeps_its_event_files_in_the_order_they_were_written(tmp_path):
    folder = tmp_path / TENSORBOARD_DIR
    first = ScalarBoard(folder, 0)
    first.write(1, {"loss/total": 1.0})
    first.close()
    second = ScalarBoard(folder, 0)  # created within a second of the first: it waits for the next second
    second.write(1, {"loss/total": 2.0})
    second.close()
    names = sorted(path.name for path in folder.iterdir())
    assert len(names) == 2 and names[0].split(".")[3] < names[1].split(".")[3]  # the creation second in the name
    assert read_events(tmp_path) == {"loss/total": [(1, 2.0)]}


def test_waiting_for_a_later_second_waits_only_for_a_file_of_the_current_second(tmp_path):
    now = int(time.time())
    (tmp_path / f"events.out.tfevents.{now - 5:010d}.host.1.0").touch()
    began = time.monotonic()
    wait_for_a_later_second(tmp_path)
    assert time.monotonic() - began < 0.1
    (tmp_path / f"events.out.tfevents.{now:010d}.host.2.0").touch()
    wait_for_a_later_second(tmp_path)
    assert time.time() >= now + 1


def test_clearing_a_run_removes_its_event_files(runs_root):
    cfg = preset("smoke", **TINY)
    result = runs.get_or_train(cfg, progress=False)
    assert any((result.run_dir / TENSORBOARD_DIR).glob("*tfevents*"))
    runs.clear_run(result.run_dir)
    assert not (result.run_dir / TENSORBOARD_DIR).exists()


def test_the_tables_and_the_run_store_import_without_tensorboard():
    script = ("import sys, json, contrastseg.tables, contrastseg.runs; "
              "print(json.dumps(sorted(name for name in sys.modules if name.split('.')[0] == 'tensorboard' "
              "or name.startswith('torch.utils.tensorboard'))))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "MPLBACKEND": "agg"})
    assert result.returncode == 0, result.stderr[-4000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_make_tensorboard_opens_the_run_store_on_localhost(tmp_path):
    root = Path(__file__).resolve().parents[1]
    # --no-print-directory: under `make test` this make is a sub-make, which would print "Leaving directory" last
    result = subprocess.run(["make", "--no-print-directory", "--dry-run", "--always-make", "tensorboard",
                             f"CONTRASTSEG_RUNS={tmp_path}"],
                            cwd=root, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    command = result.stdout.strip().splitlines()[-1]
    assert command.startswith(".venv/bin/tensorboard ")
    assert f"--logdir {tmp_path}/store" in command and "--host 127.0.0.1" in command
    assert "--load_fast=false" in command  # the loader that honours the restart marker of a resumed run


def test_the_cost_benchmark_times_the_writes_of_a_real_run(tmp_path):
    benchmarks = Path(__file__).resolve().parents[1] / "benchmarks"
    spec = importlib.util.spec_from_file_location("tensorboard_cost_benchmark", benchmarks / "tensorboard_cost.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(["--steps", "3", "--methods", "pixel_contrast", "--out", str(tmp_path / "cost.json")])
    assert json.loads((tmp_path / "cost.json").read_text()) == result
    (row,) = result["rows"]
    assert row["method"] == "pixel_contrast" and row["steps_timed"] == 2 and row["scalars_per_step"] == 8
    assert 0 < row["write_median_ms"] and 0 < row["step_median_ms"]
    assert row["ratio_of_medians"] == pytest.approx(row["write_median_ms"] / row["step_median_ms"], rel=1e-9)
    assert ScalarBoard.write_line.__name__ == "write_line"  # the timing wrapper is gone again
