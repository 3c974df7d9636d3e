"""The run store: one folder per run key, holding the run's config, key, checkpoint, step log, metrics and
TensorBoard event files (``engine.tensorboard``).

``get_or_train(cfg)`` trains a config once and returns the cached result afterwards, so a figure notebook reuses the
runs that a table notebook trained. An interrupted run resumes from its last checkpoint. Two processes that ask for
the same run at once are serialised by a lock file: the second waits, then reads the first one's result.

The key (``ExperimentConfig.key``) holds the fields the run reads, its numerics class (cpu-fp32, cuda-bf16, ...)
and the results format (``config.RESULTS_FORMAT``), so a CPU run is never served for a GPU config and a run computed
by code of an older results format is never served at all: the store reports such folders (``older_runs``) and
leaves them alone. A run trained at another git commit of the same results format is reused (that is the cache);
``RunResult.trained_elsewhere`` says so, the table notebooks print it, and ``force=True`` retrains.

The evaluation protocol (``config.EVALUATION_FIELDS``: split, scales, flip, window, boundary width) is not part of
the key: a config that asks a stored model for another protocol evaluates it without retraining
(``RunResult.evaluate``), and the metrics of each protocol are kept in ``evaluations/`` of the run's folder.

In a dry run (``$CONTRASTSEG_PLAN`` set, see ``contrastseg.plan``) ``get_or_train`` only records the configs.

``get_or_train`` is the one way into training: it takes one config (and returns one RunResult) or a list (and returns
one per config, in order, each run trained once), and decides where each run trains. Notebooks, the tables and
``python -m contrastseg.train`` (with or without ``--run-dir``, under torchrun or not) all go through it, so every
run gets the same lock, finished-run check and ``config.json``; ``engine.train.train`` is the training loop it runs.

* In this process, by default.
* Under torchrun: process 0 takes the lock and decides, the others follow its decision and train beside it.
* A run with ``num_devices`` > 1, asked for outside torchrun, trains under a torchrun that ``get_or_train`` starts as
  a subprocess (``python -m torch.distributed.run --standalone ... -m contrastseg.train``).
* A list on a machine with several GPUs (``dispatch_slots``, or ``slots=``) trains its runs side by side, each in a
  ``python -m contrastseg.train`` subprocess on its own GPU; its runs with ``num_devices`` > 1 train after them, one
  at a time.
* A list with ``launcher=`` (``contrastseg.cluster.Launcher``): each unfinished run as a submitit job, on a SLURM
  cluster or in a local subprocess; the call waits for the jobs, then reads the runs from the store.

A training subprocess trains under the launching process's lock (``LOCKED_RUN_ENV``), writes its output to the run's
``train.log`` (whose end a failure shows), and its metrics are read back from the run's folder.

A damaged file never hides the rest of the store: ``finished_runs`` leaves a run whose ``metrics.json`` or
``config.json`` cannot be read out with a warning (``broken_runs`` lists them), and reading such a file through
``get_or_train`` raises an error that names it.

The store lives in ``<runs root>/store``: ``$CONTRASTSEG_RUNS``, else the ``runs`` folder of the repository this
package is imported from (``contrastseg.paths.runs_root``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
import os
import queue
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence, overload

import torch
from filelock import FileLock, Timeout

from contrastseg.config import RESULTS_FORMAT, CoreFields, ExperimentConfig
from contrastseg.engine.checkpoint import read_json_mapping, remove_stale_temporaries, write_text_atomically
from contrastseg.engine.distributed import TORCHRUN_VARIABLES, Distributed, resolve_device
from contrastseg.engine.tensorboard import TENSORBOARD_DIR
from contrastseg.engine.train import (CHECKPOINT_NAME, CURVE_METRICS, DAMAGED_CHECKPOINT_NAME, LOG_NAME,
                                      METRICS_NAME, PREVIOUS_CHECKPOINT_NAME, TRAINING_FILES, evaluate_run,
                                      load_trained_model, read_log, read_metrics, train)
from contrastseg.export import export_run
from contrastseg.paths import runs_root
from contrastseg.plan import placeholder_metrics, plan_file, record
from contrastseg.provenance import UNKNOWN_COMMIT, git_commit

if TYPE_CHECKING:
    from contrastseg.cluster import Launcher

PARALLEL_ENV = "CONTRASTSEG_PARALLEL_RUNS"
TRAIN_LOG_NAME = "train.log"
KEY_NAME = "run_key.json"
EVALUATIONS_DIR = "evaluations"
CONFIG_NAME = "config.json"
LOCKED_RUN_ENV = "CONTRASTSEG_LOCKED_RUN"
"""Set by ``get_or_train`` for a training subprocess it starts: the run folder whose lock the launching process holds.
In a process where it names the folder, ``run_lock`` runs under that lock (held by another process) instead of
waiting."""

def run_dir_for(cfg: ExperimentConfig, root: str | Path | None = None) -> Path:
    return Path(root or runs_root()) / "store" / f"{cfg.method}-{cfg.hash()}"


@dataclass(frozen=True)
class RunResult:
    """A finished run: its config, folder and metrics (``metrics["val"]["miou"]``, ...) under the config's
    evaluation protocol."""

    config: ExperimentConfig
    run_dir: Path
    metrics: dict

    @property
    def checkpoint(self) -> Path:
        return self.run_dir / CHECKPOINT_NAME

    @property
    def trained_commit(self) -> str:
        """The git commit of the code the run was trained with ("unknown" for a run that did not record it)."""
        return self.metrics.get("commit", UNKNOWN_COMMIT)

    @property
    def trained_elsewhere(self) -> bool:
        """True when the run was trained by other code than the code now running: another commit, or other
        uncommitted changes (``provenance.git_commit``), or code that did not record its commit."""
        return self.trained_commit != git_commit() or self.trained_commit == UNKNOWN_COMMIT

    def load_model(self, device: str | torch.device = "cpu", teacher: bool = False) -> torch.nn.Module:
        """The trained model in eval mode; the EMA teacher of a semi-supervised run with ``teacher=True``."""
        if self.metrics.get("planned"):
            raise RuntimeError(f"dry run: the {self.config.method} run {self.config.hash()} was planned, not trained")
        return load_trained_model(self.config, self.run_dir, device, teacher=teacher)

    def log(self) -> list[dict]:
        """The logged steps: step, lr, every loss term, "diagnostics" (what the method did) and seconds."""
        return read_log(self.run_dir)

    def learning_curve(self) -> list[dict]:
        """val metrics over training: ``{"step", "miou", ...}`` at every ``eval_every`` step, then at the end."""
        points = [{"step": line["step"], **line["val"]} for line in self.log() if "val" in line]
        final = self.metrics["val"]
        return points + [{"step": self.metrics["steps"], **{name: final[name] for name in CURVE_METRICS}}]

    def evaluate(self, progress: bool = False, teacher: bool = False, **protocol) -> dict:
        """The val metrics of the stored model under another evaluation protocol, computed once and kept in
        ``evaluations/`` of the run's folder; e.g. ``result.evaluate(eval_scales="0.75,1,1.25", eval_flip=True)``.

        Args:
            teacher: evaluate the EMA teacher of a semi-supervised run instead of the student (the trained model).
            protocol: evaluation fields (``config.EVALUATION_FIELDS``: ``eval_split``, ``eval_scales``,
                ``eval_flip``, ``eval_window``, ``boundary_width``); the others stay the config's.
        """
        cfg = self.config.replace(**protocol)
        if cfg.hash() != self.config.hash():
            raise ValueError(f"evaluate() takes only evaluation fields, got {sorted(protocol)}")
        return evaluation(cfg, self.run_dir, self.metrics, progress, teacher)["val"]

    def export(self, path: str | Path, teacher: bool = False) -> Path:
        """Write the deployed model (projection and auxiliary heads dropped) into the folder ``path``: a
        ``torch.export`` program (``model.pt2``), its plain state dict (``state_dict.pt``) and its architecture
        (``model.json``); ``contrastseg.export`` says what each holds. With ``teacher``, the EMA teacher of a
        semi-supervised run. Returns ``path``."""
        return export_run(self, path, teacher=teacher)


def describe_provenance(results: list[RunResult]) -> str:
    """One sentence on the runs that were trained at another commit than the code now running ("" when none)."""
    unique = {result.run_dir: result for result in results}.values()
    elsewhere = [result for result in unique if result.trained_elsewhere]
    if not elsewhere:
        return ""
    commits = sorted({result.trained_commit for result in elsewhere})
    return (f"{len(elsewhere)} of {len(unique)} runs were trained at another commit than this code "
            f"({git_commit()}): {', '.join(commits)}; the run key says their computation is the same. "
            f"`python -m contrastseg.suite --fresh` (or get_or_train(..., force=True)) retrains them.")


def evaluation(cfg: ExperimentConfig, run_dir: Path, metrics: dict, progress: bool = False,
               teacher: bool = False) -> dict:
    """``metrics`` with "val" and "protocol" of ``cfg``'s evaluation protocol: the training metrics when they were
    computed under it, else a stored or a new evaluation of the run's model (of its EMA teacher with ``teacher``,
    which the training metrics never are)."""
    protocol = cfg.evaluation_protocol()
    if metrics.get("planned") or (not teacher and metrics.get("protocol", protocol) == protocol):
        return metrics
    key = protocol | ({"model": "teacher"} if teacher else {})  # the student's name is that of its protocol alone
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    path = run_dir / EVALUATIONS_DIR / f"{name}.json"
    stored = _stored_evaluation(path)
    if stored is None:
        device = resolve_device(cfg.device)
        model = load_trained_model(cfg, run_dir, device, teacher=teacher)
        stored = {"protocol": protocol, "model": "teacher" if teacher else "student",
                  "val": evaluate_run(cfg, model, device, progress=progress)}
        path.parent.mkdir(exist_ok=True)
        write_json_atomically(path, stored)
        stored = json.loads(path.read_text(encoding="utf-8"))  # the values as a later read gives them
    return metrics | stored


def _stored_evaluation(path: Path) -> dict | None:
    """The evaluation kept in ``path``; None when there is none, or when it is damaged (with a warning naming it:
    it is computed again)."""
    if not path.exists():
        return None
    try:
        return read_json_mapping(path)
    except ValueError as error:
        warnings.warn(f"the stored evaluation {path} is damaged ({error}); it is computed again", stacklevel=3)
        return None


@overload
def get_or_train(configs: ExperimentConfig, *, root: str | Path | None = None, progress: bool = True,
                 force: bool = False, run_dir: str | Path | None = None, slots: None = None,
                 launcher: None = None) -> RunResult: ...


@overload
def get_or_train(configs: Sequence[ExperimentConfig], *, root: str | Path | None = None, progress: bool = True,
                 force: bool = False, run_dir: None = None, slots: Sequence[str] | None = None,
                 launcher: Launcher | None = None) -> list[RunResult]: ...


def get_or_train(configs, *, root=None, progress=True, force=False, run_dir=None, slots=None, launcher=None):
    """Return the run of each config from the store, training (or resuming) it first if it has not finished.

    The one way into training. Under the run folder's lock, a finished run (``metrics.json``) is returned as it is;
    any other is trained after its ``config.json`` and ``run_key.json`` are written. Where it trains:

    * One config: in this process. Under torchrun every process calls it: process 0 holds the lock, checks and
      writes, every process trains. Outside torchrun a config with ``num_devices`` > 1 trains under a torchrun that
      this call starts (``python -m torch.distributed.run --standalone ... -m contrastseg.train``).
    * A list of configs: each run once, one after the other as for one config, or, with two or more ``slots``,
      side by side: each run with ``num_devices`` == 1 in a ``python -m contrastseg.train`` subprocess on a free
      slot, then each run with ``num_devices`` > 1 alone (under torchrun, on every device). With a ``launcher``,
      each run that has not finished is a job of its own (``contrastseg.cluster``): the call submits the jobs,
      waits for them, and returns the runs as their jobs trained them (``Launcher.job_config``: ``device="auto"``
      resolved for the job's node).

    A subprocess's output goes to the run's ``train.log``, whose last lines a failure shows. In a dry run
    (``$CONTRASTSEG_PLAN``, ``contrastseg.plan``) nothing trains: each config is recorded and gets placeholder
    metrics.

    Args:
        configs: one ExperimentConfig, or a list of them. Configs of the same run (the same key; they may differ in
            the evaluation protocol) are trained once.
        root: the runs root (default ``paths.runs_root()``); the store is its ``store`` folder.
        progress: progress bars of a training in this process.
        force: train afresh even when the store holds the run (its folder is emptied first; each run once, however
            often it is listed).
        run_dir: with one config, the folder to train in instead of the store's folder of the config (``python -m
            contrastseg.train --run-dir``); it is locked, checked and written alike.
        slots: with a list, one ``CUDA_VISIBLE_DEVICES`` value per concurrent run, e.g. ["0", "1", "2", "3"]; ""
            is a CPU slot. Default ``dispatch_slots()``: one per GPU when there are several, else none. Fewer than
            two slots train the runs one after the other in this process.
        launcher: with a list, a ``contrastseg.cluster.Launcher`` ("slurm" or "local") that trains the unfinished
            runs as submitit jobs; not with ``slots`` or ``force``.

    Returns:
        For one config its RunResult; for a list one RunResult per config, in order. Each holds the metrics of its
        config's evaluation protocol.

    Raises:
        ValueError: a run's ``metrics.json`` is damaged (the message names it); ``run_dir`` with a list, or
            ``slots`` or ``launcher`` with one config; ``launcher`` with ``slots`` or ``force``.
        RuntimeError: a training subprocess failed (the message holds the end of its ``train.log``), or a job of
            the launcher ended without finishing its run (the message holds the end of its stderr).
    """
    if isinstance(configs, CoreFields):  # one config (an ExperimentConfig, or a class with more methods)
        if slots is not None:
            raise ValueError("slots are for a list of configs; one config trains in this process")
        if launcher is not None:
            raise ValueError("launcher is for a list of configs; one config trains in this process")
        return _get_or_train_run(configs, root, progress, force, run_dir)
    if run_dir is not None:
        raise ValueError("run_dir is for one config; the runs of a list train in their folders of the store")
    if launcher is not None and (slots is not None or force):
        raise ValueError("launcher trains each run as a job of its own: not with slots, nor with force (delete the "
                         "runs' folders of the store to train them afresh)")
    configs = list(configs)
    if launcher is not None and plan_file() is None:
        configs = launcher.train(configs, root)
    return _get_or_train_runs(configs, root, progress, force, dispatch_slots() if slots is None else list(slots))


def has_finished(run_dir: Path) -> bool:
    """True when the run in ``run_dir`` has finished (its ``metrics.json`` is there; written last, atomically)."""
    return (Path(run_dir) / METRICS_NAME).is_file()


def _get_or_train_runs(configs: list[ExperimentConfig], root: str | Path | None, progress: bool, force: bool,
                       slots: list[str]) -> list[RunResult]:
    """``get_or_train`` of a list: each run once (the last of its configs trains it), one after the other in this
    process with fewer than two ``slots`` or in a dry run, else side by side on the slots; one RunResult per config,
    in order, under its own evaluation protocol."""
    distinct = list({cfg.hash(): cfg for cfg in configs}.values())
    if len(slots) < 2 or plan_file() is not None:
        trained = {cfg.hash(): _get_or_train_run(cfg, root, progress, force) for cfg in distinct}
        return [_with_protocol(trained[cfg.hash()], cfg) for cfg in configs]
    free = queue.Queue()
    for slot in slots:
        free.put(slot)

    def on_a_free_slot(cfg: ExperimentConfig) -> RunResult:
        slot = free.get()
        try:
            return _get_or_train_run(cfg, root, progress, force, slot=slot)
        finally:
            free.put(slot)

    from tqdm.auto import tqdm

    side_by_side = [cfg for cfg in distinct if cfg.num_devices == 1]
    trained = {}
    with ThreadPoolExecutor(len(slots)) as pool, tqdm(total=len(distinct), desc=f"runs on {len(slots)} slots",
                                                     unit="run", disable=not progress) as bar:
        for result in pool.map(on_a_free_slot, side_by_side):
            trained[result.config.hash()] = result
            bar.update()
        for cfg in distinct:
            if cfg.num_devices > 1:
                trained[cfg.hash()] = _get_or_train_run(cfg, root, progress, force)
                bar.update()
    return [_with_protocol(trained[cfg.hash()], cfg) for cfg in configs]


def _with_protocol(result: RunResult, cfg: ExperimentConfig) -> RunResult:
    """``result`` seen through ``cfg``, which names the same run but may ask for another evaluation protocol."""
    if result.config == cfg:
        return result
    return RunResult(cfg, result.run_dir, evaluation(cfg, result.run_dir, result.metrics))


def _get_or_train_run(cfg: ExperimentConfig, root: str | Path | None, progress: bool, force: bool,
                      run_dir: str | Path | None = None, slot: str | None = None) -> RunResult:
    """``get_or_train`` of one run, in ``run_dir`` (default: the store's folder of ``cfg``): recorded in a dry run;
    else under the folder's lock (process 0's decision on every process of a torchrun) the finished run, or the run
    trained by ``_train`` (in a subprocess on ``slot`` when one is given); under ``cfg``'s evaluation protocol."""
    run_dir = Path(run_dir) if run_dir is not None else run_dir_for(cfg, root)
    planning = plan_file()
    if planning is not None:
        record(cfg, planning)
        return RunResult(cfg, run_dir, placeholder_metrics(cfg))
    world = _torchrun_world(cfg)
    with ExitStack() as locked:
        finished = None
        if world.is_main:
            report_older_runs(root)
            run_dir.mkdir(parents=True, exist_ok=True)
            locked.enter_context(run_lock(run_dir))
            finished = _finished_metrics(run_dir, force)
            if finished is None:
                write_config(cfg, run_dir)
        finished = world.gather_objects(finished)[0]  # process 0's decision, on every process of a torchrun
        metrics = finished if finished is not None else _train(cfg, run_dir, progress, slot)
        if world.is_main:
            record_use(cfg, run_dir)
            metrics = evaluation(cfg, run_dir, metrics)
    return RunResult(cfg, run_dir, metrics)


def _train(cfg: ExperimentConfig, run_dir: Path, progress: bool, slot: str | None) -> dict:
    """Train ``cfg`` into ``run_dir`` (its lock held, its ``config.json`` written) and return the metrics: in a
    ``python -m contrastseg.train`` subprocess on ``slot`` when one is given; under a torchrun subprocess when
    ``cfg`` asks for several devices and this process is not one of a torchrun; else in this process
    (``engine.train.train``; on every process of a running torchrun)."""
    if slot is not None:
        return _train_in_subprocess(cfg, run_dir, visible_devices=slot)
    if cfg.num_devices > 1 and not under_torchrun():
        return _train_in_subprocess(cfg, run_dir)
    return train(cfg, run_dir, progress=progress)


def _finished_metrics(run_dir: Path, force: bool) -> dict | None:
    """The metrics of the finished run in ``run_dir`` (under its lock); None when it is to be trained: it has not
    finished, or it is to be trained afresh (``force``, ``$CONTRASTSEG_FRESH_SINCE``), and then it is cleared."""
    metrics_path = run_dir / METRICS_NAME
    if force or _finished_before_fresh(metrics_path):
        clear_run(run_dir)
    return read_metrics(run_dir) if has_finished(run_dir) else None


def under_torchrun() -> bool:
    """True in a process that torchrun started (its rendezvous variables are set)."""
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def _torchrun_world(cfg: ExperimentConfig) -> Distributed:
    """This process's place among the torchrun processes, after joining their process group; a world of one
    outside torchrun (and then ``cfg.device`` is not looked at)."""
    if not under_torchrun():
        return Distributed()
    world, _ = Distributed.from_environment(cfg.device)
    return world


def clear_run(run_dir: Path) -> None:
    """Remove what a training left in ``run_dir`` (metrics, evaluations, checkpoints, logs, TensorBoard events,
    temporary files); the lock stays."""
    for name in (METRICS_NAME, CHECKPOINT_NAME, PREVIOUS_CHECKPOINT_NAME, DAMAGED_CHECKPOINT_NAME, LOG_NAME,
                 TRAIN_LOG_NAME, KEY_NAME, CONFIG_NAME):
        (run_dir / name).unlink(missing_ok=True)
    remove_stale_temporaries(run_dir, TRAINING_FILES)
    for folder in (EVALUATIONS_DIR, TENSORBOARD_DIR):
        shutil.rmtree(run_dir / folder, ignore_errors=True)


USED_RUNS_ENV = "CONTRASTSEG_USED_RUNS"
"""When set, a file to which ``get_or_train`` appends the key of every run it returns (the suite's stamps)."""


def record_use(cfg: ExperimentConfig, run_dir: Path) -> None:
    """Append the run's folder name and config to ``$CONTRASTSEG_USED_RUNS``, if set."""
    path = os.environ.get(USED_RUNS_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"run": run_dir.name, "config": cfg.to_dict()}, sort_keys=True) + "\n")


def older_runs(root: str | Path | None = None) -> list[Path]:
    """Finished runs of the store that no config of this code names: runs of an older results format (or of no
    recorded key), which are never served. Delete them, or keep them to compare by hand."""
    store = Path(root or runs_root()) / "store"
    older = []
    for run_dir in sorted(path.parent for path in store.glob(f"*/{METRICS_NAME}")):
        try:
            key = json.loads((run_dir / KEY_NAME).read_text())
        except (OSError, ValueError):
            key = {}
        if key.get("format") != RESULTS_FORMAT:
            older.append(run_dir)
    return older


_REPORTED_STORES: set[Path] = set()


def report_older_runs(root: str | Path | None = None) -> None:
    """Warn once per store and process when it holds runs of an older results format."""
    store = (Path(root or runs_root()) / "store").resolve()
    if store in _REPORTED_STORES:
        return
    _REPORTED_STORES.add(store)
    older = older_runs(root)
    if older:
        warnings.warn(f"the run store {store} holds {len(older)} run(s) of an older results format (this code writes "
                      f"format {RESULTS_FORMAT}), e.g. {older[0].name}; they are not reused: their configs train "
                      f"afresh under new keys. Delete them to free the space.", stacklevel=3)


@dataclass(frozen=True)
class BrokenRun:
    """A finished run of the store that cannot be read back: its folder and what is wrong (a ``metrics.json`` cut
    short, a ``config.json`` that is not JSON)."""

    run_dir: Path
    problem: str


def finished_runs(root: str | Path | None = None) -> list[RunResult]:
    """Every finished run of the store's current results format, by folder name. Folders this code cannot read
    back are left out: a ``config.json`` with a field since removed, or a folder whose name is not its config's key
    (an older results format: ``older_runs``), silently; a damaged ``metrics.json`` or ``config.json`` with a warning
    that names each such folder (``broken_runs``)."""
    results, broken = _scan_store(root)
    if broken:
        store = Path(root or runs_root()) / "store"
        warnings.warn(f"{len(broken)} finished run(s) of the run store {store} are broken and left out: "
                      + "; ".join(f"{run.run_dir.name}: {run.problem}" for run in broken), stacklevel=2)
    return results


def broken_runs(root: str | Path | None = None) -> list[BrokenRun]:
    """The finished runs of the store that ``finished_runs`` leaves out because a file of theirs is damaged."""
    return _scan_store(root)[1]


def _scan_store(root: str | Path | None) -> tuple[list[RunResult], list[BrokenRun]]:
    results, broken = [], []
    for metrics_path in sorted((Path(root or runs_root()) / "store").glob(f"*/{METRICS_NAME}")):
        run_dir = metrics_path.parent
        config_path = run_dir / CONFIG_NAME
        try:
            values = json.loads(config_path.read_text(encoding="utf-8", errors="replace"))
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as error:
            broken.append(BrokenRun(run_dir, f"{config_path} cannot be read ({error})"))
            continue
        try:
            cfg = ExperimentConfig.from_dict(values)
        except (TypeError, ValueError, AttributeError):
            continue
        if run_dir_for(cfg, root) != run_dir:
            continue
        try:
            results.append(RunResult(cfg, run_dir, read_metrics(run_dir)))
        except (OSError, ValueError) as error:
            broken.append(BrokenRun(run_dir, str(error)))
    return results, broken


def write_config(cfg: ExperimentConfig, run_dir: Path) -> None:
    """``run_dir/config.json`` (every field: the file ``python -m contrastseg.train --config`` reads) and
    ``run_dir/run_key.json`` (the key that names the folder)."""
    write_json_atomically(run_dir / CONFIG_NAME, cfg.to_dict())
    write_json_atomically(run_dir / KEY_NAME, cfg.key())


def write_json_atomically(path: Path, value) -> None:
    """``path`` holds either its old content or all of ``value`` as JSON, never a part (``write_text_atomically``:
    fsynced, with the umask's permissions)."""
    write_text_atomically(path, json.dumps(value, indent=1, sort_keys=True))


FRESH_SINCE_ENV = "CONTRASTSEG_FRESH_SINCE"
"""When set (a Unix time), runs finished before it are trained again: the suite's ``--fresh``."""


def _finished_before_fresh(metrics_path: Path) -> bool:
    since = os.environ.get(FRESH_SINCE_ENV)
    return bool(since) and metrics_path.exists() and metrics_path.stat().st_mtime < float(since)


def _train_in_subprocess(cfg: ExperimentConfig, run_dir: Path, visible_devices: str | None = None) -> dict:
    """Train ``cfg`` into ``run_dir`` in a ``python -m contrastseg.train`` subprocess (under ``torchrun
    --standalone`` when ``num_devices`` > 1) and return its metrics; its output goes to ``run_dir/train.log``, whose
    end a failure shows. The caller holds ``run_lock(run_dir)`` and has written ``run_dir/config.json``, which the
    subprocess reads; it trains under that lock (``LOCKED_RUN_ENV``).

    Args:
        visible_devices: ``CUDA_VISIBLE_DEVICES`` for the subprocess; None keeps this process's.
    """
    if cfg.num_devices > 1:
        _check_device_count(cfg, visible_devices)
        starter = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc-per-node={cfg.num_devices}"]
    else:
        starter = [sys.executable]
    command = [*starter, "-m", "contrastseg.train", "--config", str(run_dir / CONFIG_NAME),
               "--run-dir", str(run_dir), "--no-progress"]
    environment = dict(os.environ) | {LOCKED_RUN_ENV: str(run_dir.resolve())}
    if visible_devices is not None:
        environment["CUDA_VISIBLE_DEVICES"] = visible_devices
    log_path = run_dir / TRAIN_LOG_NAME
    with log_path.open("w") as log:
        finished = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=environment)
    if finished.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-25:])
        raise RuntimeError(f"training {cfg.method} run {cfg.hash()} failed (exit {finished.returncode}): "
                           f"{' '.join(command)}\nlast lines of {log_path}:\n{tail}")
    return read_metrics(run_dir)


def _check_device_count(cfg: ExperimentConfig, visible_devices: str | None) -> None:
    if cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available()):
        return
    available = len(visible_devices.split(",")) if visible_devices else torch.cuda.device_count()
    if cfg.num_devices > available:
        raise RuntimeError(f"the run asks for num_devices={cfg.num_devices} GPUs, but {available} are visible; "
                           f"lower num_devices, or use device='cpu' for CPU processes")


def dispatch_slots() -> list[str]:
    """Where ``get_or_train`` of a list trains runs side by side by default: one slot per GPU when there are several;
    none otherwise (one run after the other in this process).

    ``$CONTRASTSEG_PARALLEL_RUNS`` = N sets N slots: on a machine with GPUs they take the GPUs in turn, on a CPU
    machine they are CPU slots (each run then uses its config's ``num_threads``; keep N x num_threads within the
    cores, or every run slows down many times).
    """
    count = torch.cuda.device_count()
    wanted = int(os.environ.get(PARALLEL_ENV) or 0) or (count if count > 1 else 0)
    return [str(i % count) if count else "" for i in range(wanted)]


@contextmanager
def run_lock(run_dir: Path):
    """An exclusive lock on ``run_dir/.lock`` (``filelock``: released by the OS if the holder dies).

    In a training subprocess that ``get_or_train`` started for ``run_dir`` (``$CONTRASTSEG_LOCKED_RUN`` names it), a
    lock that another process holds is the launching process's: the block runs under it instead of waiting for it.
    """
    lock = FileLock(run_dir / ".lock")
    held_by_launcher = False
    try:
        lock.acquire(timeout=0)
    except Timeout:
        held_by_launcher = os.environ.get(LOCKED_RUN_ENV) == str(Path(run_dir).resolve())
        if not held_by_launcher:
            print(f"waiting for another process to finish the run in {run_dir}", file=sys.stderr)
            lock.acquire()
    if held_by_launcher:
        yield
        return
    try:
        yield
    finally:
        lock.release()
