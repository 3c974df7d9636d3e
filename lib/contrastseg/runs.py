"""The run store: one folder per config hash, holding the run's config, checkpoint, step log and metrics.

``get_or_train(cfg)`` trains a config once and returns the cached result afterwards, so a figure notebook reuses the
runs that a table notebook trained. An interrupted run resumes from its last checkpoint. Two processes that ask for
the same run at once are serialised by a lock file: the second waits, then reads the first one's result.

In a dry run (``$CONTRASTSEG_PLAN`` set, see ``contrastseg.plan``) ``get_or_train`` only records the config.

A run with ``num_devices`` > 1 trains under torchrun, started as a subprocess (``python -m torch.distributed.run
--standalone``), and its metrics are read back from its folder. ``get_or_train_many`` trains independent runs side
by side, one per GPU, when the machine has several (``dispatch_slots``).

The store lives in ``./runs/store`` unless the environment variable ``CONTRASTSEG_RUNS`` names another root.
"""

from __future__ import annotations

import fcntl
import json
import os
import queue
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from contrastseg.config import ExperimentConfig
from contrastseg.engine.train import CHECKPOINT_NAME, METRICS_NAME, load_trained_model, read_log, train
from contrastseg.paths import runs_root
from contrastseg.plan import placeholder_metrics, plan_file, record

PARALLEL_ENV = "CONTRASTSEG_PARALLEL_RUNS"
TRAIN_LOG_NAME = "train.log"

def run_dir_for(cfg: ExperimentConfig, root: str | Path | None = None) -> Path:
    return Path(root or runs_root()) / "store" / f"{cfg.method}-{cfg.hash()}"


@dataclass(frozen=True)
class RunResult:
    """A finished run: its config, folder and metrics (``metrics["val"]["miou"]``, ...)."""

    config: ExperimentConfig
    run_dir: Path
    metrics: dict

    @property
    def checkpoint(self) -> Path:
        return self.run_dir / CHECKPOINT_NAME

    def load_model(self, device: str | torch.device = "cpu", teacher: bool = False) -> torch.nn.Module:
        """The trained model in eval mode; the EMA teacher of a semi-supervised run with ``teacher=True``."""
        if self.metrics.get("planned"):
            raise RuntimeError(f"dry run: the {self.config.method} run {self.config.hash()} was planned, not trained")
        return load_trained_model(self.config, self.run_dir, device, teacher=teacher)

    def log(self) -> list[dict]:
        return read_log(self.run_dir)


def get_or_train(cfg: ExperimentConfig, *, root: str | Path | None = None, progress: bool = True) -> RunResult:
    """Return the run of ``cfg`` from the store, training (or resuming) it first if it has not finished."""
    return _get_or_train(cfg, root, lambda run_dir: train_in(cfg, run_dir, progress=progress))


def get_or_train_many(configs: list[ExperimentConfig], *, root: str | Path | None = None, progress: bool = True,
                      slots: list[str] | None = None) -> list[RunResult]:
    """``get_or_train`` for each config, the missing runs side by side when there are several slots.

    Args:
        configs: the runs (duplicates are trained once).
        slots: one ``CUDA_VISIBLE_DEVICES`` value per concurrent run, e.g. ["0", "1", "2", "3"]; "" is a CPU
            slot. Default ``dispatch_slots()``: one per GPU when there are several, else none (one run after the
            other in this process). Each concurrent run is a ``python -m contrastseg.train`` subprocess on its slot;
            a run with ``num_devices`` > 1 waits and then trains alone on every device.

    Returns:
        One RunResult per config, in order.
    """
    slots = dispatch_slots() if slots is None else list(slots)
    if len(slots) < 2 or plan_file() is not None:
        return [get_or_train(cfg, root=root, progress=progress) for cfg in configs]
    unique = list({cfg.hash(): cfg for cfg in configs}.values())
    free = queue.Queue()
    for slot in slots:
        free.put(slot)

    def on_a_free_slot(cfg: ExperimentConfig) -> RunResult:
        slot = free.get()
        try:
            return _get_or_train(cfg, root, lambda run_dir: launch(cfg, run_dir, visible_devices=slot))
        finally:
            free.put(slot)

    from tqdm import tqdm

    parallel = [cfg for cfg in unique if cfg.num_devices == 1]
    results = {}
    with ThreadPoolExecutor(len(slots)) as pool, tqdm(total=len(unique), desc=f"runs on {len(slots)} slots",
                                                     unit="run", disable=not progress) as bar:
        for result in pool.map(on_a_free_slot, parallel):
            results[result.config.hash()] = result
            bar.update()
        for cfg in unique:
            if cfg.num_devices > 1:
                results[cfg.hash()] = get_or_train(cfg, root=root, progress=progress)
                bar.update()
    return [results[cfg.hash()] for cfg in configs]


def _get_or_train(cfg: ExperimentConfig, root: str | Path | None, train_into) -> RunResult:
    run_dir = run_dir_for(cfg, root)
    planning = plan_file()
    if planning is not None:
        record(cfg, planning)
        return RunResult(cfg, run_dir, placeholder_metrics(cfg))
    run_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(run_dir):
        metrics_path = run_dir / METRICS_NAME
        if metrics_path.exists():
            return RunResult(cfg, run_dir, json.loads(metrics_path.read_text()))
        write_config(cfg, run_dir)
        metrics = train_into(run_dir)
    return RunResult(cfg, run_dir, metrics)


def finished_runs(root: str | Path | None = None) -> list[RunResult]:
    """Every finished run of the store, by folder name. Runs this version cannot read back are left out: a
    ``config.json`` with a field since removed, or a folder whose name is no longer its config's hash."""
    results = []
    for metrics_path in sorted((Path(root or runs_root()) / "store").glob(f"*/{METRICS_NAME}")):
        try:
            cfg = ExperimentConfig.from_dict(json.loads((metrics_path.parent / "config.json").read_text()))
        except (OSError, ValueError, TypeError):
            continue
        if run_dir_for(cfg, root) == metrics_path.parent:
            results.append(RunResult(cfg, metrics_path.parent, json.loads(metrics_path.read_text())))
    return results


def write_config(cfg: ExperimentConfig, run_dir: Path) -> None:
    """``run_dir/config.json``: every field, the file ``python -m contrastseg.train --config`` reads."""
    (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1, sort_keys=True))


def train_in(cfg: ExperimentConfig, run_dir: Path, progress: bool = True) -> dict:
    """Train ``cfg`` into ``run_dir``: in this process, or under torchrun when it asks for several devices."""
    if cfg.num_devices > 1:
        return launch(cfg, run_dir)
    return train(cfg, run_dir, progress=progress)


def launch(cfg: ExperimentConfig, run_dir: Path, visible_devices: str | None = None) -> dict:
    """Train ``cfg`` into ``run_dir`` in a subprocess (under ``torchrun --standalone`` when ``num_devices`` > 1)
    and return its metrics; its output goes to ``run_dir/train.log``, whose end a failure shows.

    Args:
        visible_devices: ``CUDA_VISIBLE_DEVICES`` for the subprocess; None keeps this process's.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    write_config(cfg, run_dir)
    if cfg.num_devices > 1:
        _check_device_count(cfg, visible_devices)
        starter = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc-per-node={cfg.num_devices}"]
    else:
        starter = [sys.executable]
    command = [*starter, "-m", "contrastseg.train", "--config", str(run_dir / "config.json"),
               "--run-dir", str(run_dir), "--no-progress"]
    environment = dict(os.environ)
    if visible_devices is not None:
        environment["CUDA_VISIBLE_DEVICES"] = visible_devices
    log_path = run_dir / TRAIN_LOG_NAME
    with log_path.open("w") as log:
        finished = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=environment)
    if finished.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-25:])
        raise RuntimeError(f"training {cfg.method} run {cfg.hash()} failed (exit {finished.returncode}): "
                           f"{' '.join(command)}\nlast lines of {log_path}:\n{tail}")
    return json.loads((run_dir / METRICS_NAME).read_text())


def _check_device_count(cfg: ExperimentConfig, visible_devices: str | None) -> None:
    if cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available()):
        return
    available = len(visible_devices.split(",")) if visible_devices else torch.cuda.device_count()
    if cfg.num_devices > available:
        raise RuntimeError(f"the run asks for num_devices={cfg.num_devices} GPUs, but {available} are visible; "
                           f"lower num_devices, or use device='cpu' for CPU processes")


def dispatch_slots() -> list[str]:
    """Where ``get_or_train_many`` runs concurrent runs: one slot per GPU when there are several; none otherwise.

    ``$CONTRASTSEG_PARALLEL_RUNS`` = N sets N slots: on a machine with GPUs they take the GPUs in turn, on a CPU
    machine they are CPU slots (each run then uses its config's ``num_threads``; keep N x num_threads within the
    cores, or every run slows down many times).
    """
    count = torch.cuda.device_count()
    wanted = int(os.environ.get(PARALLEL_ENV) or 0) or (count if count > 1 else 0)
    return [str(i % count) if count else "" for i in range(wanted)]


@contextmanager
def run_lock(run_dir: Path):
    """An exclusive lock on ``run_dir/.lock`` (released by the OS if the holder dies)."""
    with open(run_dir / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another process to finish the run in {run_dir}", file=sys.stderr)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
