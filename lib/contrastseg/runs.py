"""The run store: one folder per config hash, holding the run's config, checkpoint, step log and metrics.

``get_or_train(cfg)`` trains a config once and returns the cached result afterwards, so a figure notebook reuses the
runs that a table notebook trained. An interrupted run resumes from its last checkpoint. Two processes that ask for
the same run at once are serialised by a lock file: the second waits, then reads the first one's result.

In a dry run (``$CONTRASTSEG_PLAN`` set, see ``contrastseg.plan``) ``get_or_train`` only records the config.

The store lives in ``./runs/store`` unless the environment variable ``CONTRASTSEG_RUNS`` names another root.
"""

from __future__ import annotations

import fcntl
import json
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from contrastseg.config import ExperimentConfig
from contrastseg.engine.train import CHECKPOINT_NAME, METRICS_NAME, load_trained_model, read_log, train
from contrastseg.paths import runs_root
from contrastseg.plan import placeholder_metrics, plan_file, record

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
        (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1, sort_keys=True))
        metrics = train(cfg, run_dir, progress=progress)
    return RunResult(cfg, run_dir, metrics)


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
