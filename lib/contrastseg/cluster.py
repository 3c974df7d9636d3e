"""Training runs as cluster jobs: each run that the store has not finished becomes one submitit job.

The paper batch is dozens of runs of hours each, more than the one machine that runs the notebooks can train. A
``Launcher`` hands those runs to a scheduler through submitit: ``"slurm"`` submits each with ``sbatch`` (submitit's
``SlurmExecutor``), ``"local"`` starts each as a subprocess of this machine (submitit's ``LocalExecutor``, the same
code path without a cluster). Two ways in:

* ``python -m contrastseg.suite --launcher slurm --slurm-time 4:00:00 ...`` plans the batch (the suite's dry run:
  every notebook executed with ``$CONTRASTSEG_PLAN`` set, ``contrastseg.plan``), submits the planned runs that have
  not finished (``launch``), prints one line per run (``format_outcomes``) and exits. Run the same command again
  later: runs whose job is still queued or running are left alone, and once every planned run has finished it
  executes the notebooks as the suite does without a launcher; they read the runs from the store, under the same
  run keys.
* ``runs.get_or_train(configs, launcher=Launcher("slurm", time_minutes=240))`` in a notebook or script: the list's
  unfinished runs are submitted the same way, the call waits for their jobs (``Launcher.train``) and returns the
  results from the store.

Each job calls ``runs.get_or_train(cfg)`` on its node (``TrainRun``), so a job takes the run folder's lock, skips a
run that finished meanwhile, resumes from the last checkpoint, and starts torchrun itself when ``num_devices`` > 1:
such a job asks for ``num_devices`` GPUs on one node (``--slurm-gpus-per-run`` overrides) and one task.
``TrainRun`` is checkpointable in submitit's sense: a job that SLURM preempts, or that reaches its time limit, is
requeued under the same job id and the run resumes from its last checkpoint (at most three timeouts, submitit's
``max_num_timeout``).

A job's record is ``cluster_job.json`` in the run's folder (``JOB_RECORD_NAME``): the launcher, the job id, when it
was submitted, the job's stdout and stderr files and the sbatch script (under ``--slurm-folder``, default
``<runs root>/slurm``), the resources asked for, and the earlier jobs of the run with the state each ended in. A
later launch asks the scheduler about the recorded job before submitting anything (``job_states``): SLURM through
``sacct`` (submitit's own status query), and through ``squeue`` for a job that ``sacct`` does not list (a cluster
without accounting, or a job seconds old); a local job by its process. A job that is pending, running, requeued or
completing (``ACTIVE_STATES``) is not submitted again. A run whose job ended (failed, cancelled, timed out, or
completed without the run finishing) is submitted again, and the table names the old job and the state it ended in.
When neither ``sacct`` nor ``squeue`` answers, the job's state is unknown and the run is not resubmitted: the table
says so.

Resources per job (``Launcher.resources``): ``--slurm-time`` (minutes, ``HH:MM:SS`` or ``D-HH:MM:SS``; required for
SLURM, since submitit would otherwise ask for 5 minutes), ``--slurm-partition``, ``--slurm-account``, GPUs
(``--slurm-gpus-per-run``, default the run's ``num_devices``; 0 for a config with ``device="cpu"``), CPUs
(``--slurm-cpus-per-gpu`` per GPU, default the run's ``num_threads + num_workers``, per process for a CPU run), and
any other sbatch option as ``--slurm-extra KEY=VALUE`` (submitit's ``slurm_additional_parameters``, e.g.
``--slurm-extra mem=64G --slurm-extra constraint=a100``).

Run keys and devices: the key holds the numerics class, and ``device="auto"`` resolves on the machine that computes
the key, so a login node without a GPU and a GPU node name a run differently. The launcher therefore submits each
run with its device resolved for the job (``Launcher.job_config``: ``"cuda"`` when the job gets GPUs, else ``"cpu"``;
no field of the key changes), records it under that key, and the suite executes the notebooks only on a machine
that names the runs alike, a GPU node for GPU runs; elsewhere it says so and exits.

What the tests cover (``tests/test_cluster.py``), on a CPU machine without SLURM: the local launcher end to end (a run
submitted, its job id recorded, trained by the job, then returned by ``get_or_train`` without training; a running
job not submitted twice; the suite's ``--launcher local`` from submission to executed notebooks), and the SLURM path
against small stand-in ``sbatch``, ``sacct``, ``squeue`` and ``srun`` programs on ``PATH`` that record their arguments
and answer as SLURM does: the sbatch script that submitit writes (partition, time, GPUs, CPUs, account, extra
options), the job id in the run folder, no resubmission of a pending or running job, resubmission of a failed or
cancelled one, a refused submission, and the suite refusing to execute the notebooks of GPU-trained runs on this
CPU machine. Not tested here: a real SLURM cluster, GPU jobs, torchrun inside a job, requeueing after a timeout or a
preemption (submitit's mechanism, which ``TrainRun.checkpoint`` only hands the same call).

The local launcher starts every job at once; keep its batches within the machine's cores (each run uses its
``num_threads``). On a machine with GPUs, submitit gives every local job the first GPUs (``CUDA_VISIBLE_DEVICES``
from 0), so local jobs of GPU runs share them. A notebook whose later runs depend on the results of earlier ones
(a weight chosen on val) plans only what its dry run reaches: the rest trains in the notebook's own process when the
suite executes it.
"""

from __future__ import annotations

import getpass
import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Mapping, Sequence

from filelock import FileLock

from contrastseg.config import ExperimentConfig
from contrastseg.engine.checkpoint import read_json_mapping
from contrastseg.extras import import_extra_package, install_command
from contrastseg.paths import DATA_ENV, RUNS_ENV, data_root, environ, runs_root

LAUNCHERS = ("slurm", "local")
JOB_RECORD_NAME = "cluster_job.json"
LAUNCH_LOCK_NAME = ".launch.lock"
CLUSTER_INSTALL = install_command("cluster")
LOCAL_TIME_MINUTES = 7 * 24 * 60
"""The time limit of a local job when none is given: submitit's local default (2 minutes) would stop most runs."""

ACTIVE_STATES = frozenset({"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD",
                           "REQUEUE_FED", "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING"})
"""Scheduler states of a job that has not ended (SLURM's names; a local job is RUNNING while its process lives)."""
UNKNOWN_STATE = "UNKNOWN"
"""The state of a job that neither ``sacct`` nor ``squeue`` could be asked about: its run is not resubmitted."""
GONE_STATE = "GONE"
"""The state of a job that the scheduler no longer lists and whose end it did not report."""


def import_submitit() -> ModuleType:
    """The ``submitit`` package (of the ``cluster`` extra).

    Raises:
        ImportError: submitit is not installed; the message names ``CLUSTER_INSTALL``.
    """
    return import_extra_package("submitit", "the cluster launcher", "cluster")


def parse_time(text: str | int) -> int:
    """A SLURM time limit as whole minutes: ``"240"``, ``"4:00:00"`` (hours, minutes, seconds) or ``"1-12:00:00"``
    (days first); seconds round up.

    Raises:
        ValueError: any other form, or a limit of zero; the message lists the valid forms.
    """
    value = str(text).strip()
    match = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d+):(\d+)", value)
    if re.fullmatch(r"\d+", value):
        minutes = int(value)
    elif match:
        days, hours, mins, secs = (int(part or 0) for part in match.groups())
        minutes = days * 24 * 60 + hours * 60 + mins + (1 if secs else 0)
    else:
        raise ValueError(f"--slurm-time {value!r}: give the time limit as minutes (240), HH:MM:SS (4:00:00) or "
                         f"D-HH:MM:SS (1-12:00:00)")
    if minutes <= 0:
        raise ValueError(f"--slurm-time {value!r}: the time limit must be above zero")
    return minutes


def parse_extra(items: Sequence[str]) -> dict[str, str]:
    """``["mem=64G", "constraint=a100"]`` -> ``{"mem": "64G", "constraint": "a100"}``: sbatch options by their long
    name without the dashes.

    Raises:
        ValueError: an item is not KEY=VALUE with a non-empty KEY.
    """
    extra = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or key.strip().startswith("-"):
            raise ValueError(f"--slurm-extra wants KEY=VALUE with KEY an sbatch option without its dashes "
                             f"(e.g. mem=64G), got {item!r}")
        extra[key.strip()] = value.strip()
    return extra


@dataclass(frozen=True)
class JobRecord:
    """What ``cluster_job.json`` in a run's folder holds: the run's latest job and the ones before it.

    ``earlier`` lists the run's earlier jobs, oldest first, each as ``{"job_id", "launcher", "submitted",
    "state"}`` with the state it was last seen in."""

    launcher: str
    job_id: str
    submitted: str  # UTC, ISO 8601
    stdout: str
    stderr: str
    result: str  # submitit's result file of the job, written when the job's function returns or raises
    submission_file: str  # the sbatch script ("" for a local job)
    resources: dict
    earlier: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def read_record(run_dir: Path) -> JobRecord | None:
    """The job record of ``run_dir``; None when there is none.

    Raises:
        ValueError: the record is damaged (the message names the file: delete it to submit the run afresh).
    """
    path = Path(run_dir) / JOB_RECORD_NAME
    try:
        return JobRecord(**read_json_mapping(path))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as error:
        raise ValueError(f"the job record {path} cannot be read ({error}); delete it to submit the run afresh") \
            from error


def write_record(run_dir: Path, record: JobRecord) -> None:
    from contrastseg.runs import write_json_atomically

    write_json_atomically(Path(run_dir) / JOB_RECORD_NAME, record.to_dict())


class TrainRun:
    """The function a job runs: ``runs.get_or_train`` of one config, on the job's node.

    Checkpointable in submitit's sense (its ``checkpoint`` method): when SLURM preempts the job or its time runs out,
    submitit requeues the job with the same call, and the run resumes from its last checkpoint.
    """

    def __call__(self, config: dict, root: str, environment: Mapping[str, str]) -> dict:
        """Train (or resume, or find finished) the run of ``config`` in the store under ``root``, with
        ``environment`` set (the runs and data roots of the launching process); return the run's folder name and
        val metrics."""
        from contrastseg import runs

        with environ(**environment):
            result = runs.get_or_train(ExperimentConfig.from_dict(config), root=root, progress=False)
        return {"run": result.run_dir.name, "val": result.metrics["val"]}

    def checkpoint(self, *args, **kwargs):
        """The same call again, for submitit to requeue (the run folder holds the state to resume from)."""
        return import_submitit().helpers.DelayedSubmission(self, *args, **kwargs)


@dataclass(frozen=True)
class Launcher:
    """Where and with what resources the runs' jobs go.

    Args:
        kind: ``"slurm"`` (sbatch) or ``"local"`` (a subprocess per run on this machine).
        time_minutes: each job's time limit (``parse_time``); required for SLURM; local default ``LOCAL_TIME_MINUTES``.
        partition, account: SLURM's partition and account (None: the cluster's default).
        gpus_per_run: GPUs per job; None: the run's ``num_devices`` (0 for ``device="cpu"``; a local job gets GPUs
            only where this machine has them).
        cpus_per_gpu: CPUs per GPU (per process for a CPU run); None: the run's ``num_threads + num_workers``.
        extra: further sbatch options, e.g. ``{"mem": "64G"}`` (submitit's ``slurm_additional_parameters``).
        folder: submitit's folder for job scripts and logs (``%j`` is the job id); None: ``<runs root>/slurm/%j``
            (``<runs root>/local`` for local jobs).
        poll_seconds: how often ``train`` asks about the jobs it waits for.
    """

    kind: str = "slurm"
    time_minutes: int | None = None
    partition: str | None = None
    account: str | None = None
    gpus_per_run: int | None = None
    cpus_per_gpu: int | None = None
    extra: Mapping[str, str] = field(default_factory=dict)
    folder: str | Path | None = None
    poll_seconds: float = 30.0

    def __post_init__(self) -> None:
        if self.kind not in LAUNCHERS:
            raise ValueError(f"unknown launcher {self.kind!r}; valid launchers: {', '.join(LAUNCHERS)}")
        if self.kind == "slurm" and self.time_minutes is None:
            raise ValueError("--slurm-time is required with --launcher slurm: each job's time limit, as minutes or "
                             "HH:MM:SS (submitit would ask for 5 minutes; a run whose job times out is requeued and "
                             "resumes from its last checkpoint); --dry-run estimates each run's GPU hours")
        if self.time_minutes is not None and self.time_minutes <= 0:
            raise ValueError(f"time_minutes={self.time_minutes}: the time limit must be above zero")
        if self.gpus_per_run is not None and self.gpus_per_run < 0:
            raise ValueError(f"--slurm-gpus-per-run {self.gpus_per_run}: give 0 or more GPUs")
        if self.cpus_per_gpu is not None and self.cpus_per_gpu < 1:
            raise ValueError(f"--slurm-cpus-per-gpu {self.cpus_per_gpu}: give 1 or more CPUs")
        if self.kind == "local":
            slurm_only = [flag for flag, value in (("--slurm-partition", self.partition),
                                                   ("--slurm-account", self.account),
                                                   ("--slurm-extra", self.extra)) if value]
            if slurm_only:
                raise ValueError(f"{', '.join(slurm_only)} apply to --launcher slurm only")

    def gpus(self, cfg: ExperimentConfig) -> int:
        """The GPUs the job of ``cfg`` asks for.

        Raises:
            ValueError: fewer GPUs than a GPU run's ``num_devices``, or none for ``device="cuda"``.
        """
        if cfg.device == "cpu":
            return 0
        if self.kind == "local":
            import torch

            if not torch.cuda.is_available():
                return 0
        gpus = cfg.num_devices if self.gpus_per_run is None else self.gpus_per_run
        if cfg.device == "cuda" and gpus == 0:
            raise ValueError(f"the {cfg.method} run {cfg.hash()} asks for device='cuda', but its job would get no "
                             f"GPU (--slurm-gpus-per-run 0)")
        if 0 < gpus < cfg.num_devices:
            raise ValueError(f"--slurm-gpus-per-run {gpus} is below num_devices={cfg.num_devices} of the "
                             f"{cfg.method} run {cfg.hash()}: its torchrun needs one GPU per process")
        return gpus

    def job_config(self, cfg: ExperimentConfig) -> ExperimentConfig:
        """``cfg`` as its job trains it: ``device="auto"`` resolved to what the job gets (``"cuda"`` with GPUs, else
        ``"cpu"``), so that this machine and the job's node compute the same run key."""
        if cfg.device != "auto":
            return cfg
        return cfg.replace(device="cuda" if self.gpus(cfg) else "cpu")

    def resources(self, cfg: ExperimentConfig) -> dict:
        """The submitit parameters (``AutoExecutor.update_parameters``) of the job of ``cfg``: one node, one task,
        its GPUs and CPUs, the time limit, and for SLURM the name, partition, account and extra options."""
        gpus = self.gpus(cfg)
        per_unit = self.cpus_per_gpu or max(cfg.num_threads, 1) + cfg.num_workers
        parameters = {"nodes": 1, "tasks_per_node": 1, "cpus_per_task": per_unit * max(gpus, cfg.num_devices),
                      "timeout_min": self.time_minutes or LOCAL_TIME_MINUTES, "name": f"{cfg.method}-{cfg.hash()}"}
        if gpus:
            parameters["gpus_per_node"] = gpus
        if self.kind == "slurm":
            parameters |= {f"slurm_{name}": value for name, value in (("partition", self.partition),
                                                                      ("account", self.account)) if value}
            if self.extra:
                parameters["slurm_additional_parameters"] = dict(self.extra)
        return parameters

    def job_folder(self, root: str | Path | None) -> Path:
        """submitit's folder: ``folder``, else ``<runs root>/slurm/%j`` (a folder per job), or ``<runs root>/local``
        for local jobs (whose controller would make a folder named ``%j`` literally)."""
        if self.folder:
            return Path(self.folder)
        base = Path(root or runs_root()).resolve() / self.kind
        return base / "%j" if self.kind == "slurm" else base

    def submit(self, cfg: ExperimentConfig, root: str | Path | None = None,
               earlier: Sequence[dict] = ()) -> JobRecord:
        """Submit the job that trains ``cfg`` (a config as ``job_config`` returns it) into the store under ``root``,
        write its record into the run's folder and return it.

        Args:
            earlier: the run's earlier jobs, kept in the record.

        Raises:
            RuntimeError: the job could not be submitted; the message holds the submission's error (sbatch's).
        """
        from contrastseg.runs import run_dir_for

        submitit = import_submitit()
        root = Path(root or runs_root()).resolve()
        executor = submitit.AutoExecutor(folder=self.job_folder(root), cluster=self.kind)
        resources = self.resources(cfg)
        executor.update_parameters(**resources)
        environment = {RUNS_ENV: str(root), DATA_ENV: str(data_root().resolve())}
        try:
            job = executor.submit(TrainRun(), cfg.to_dict(), str(root), environment)
        except (OSError, RuntimeError) as error:  # submitit's FailedJobError holds sbatch's stderr
            raise RuntimeError(f"the {self.kind} job of the {cfg.method} run {cfg.hash()} could not be submitted: "
                               f"{str(error).strip()}") from error
        submission_file = job.paths.submission_file if self.kind == "slurm" else None
        record = JobRecord(launcher=self.kind, job_id=str(job.job_id),
                           submitted=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                           stdout=str(job.paths.stdout), stderr=str(job.paths.stderr),
                           result=str(job.paths.result_pickle),
                           submission_file=str(submission_file) if submission_file else "",
                           resources=resources, earlier=list(earlier))
        run_dir = run_dir_for(cfg, root)
        run_dir.mkdir(parents=True, exist_ok=True)
        write_record(run_dir, record)
        return record

    def train(self, configs: Sequence[ExperimentConfig], root: str | Path | None = None) -> list[ExperimentConfig]:
        """Submit the unfinished runs of ``configs`` (``launch``), wait until every one has finished, and return each
        config as its job trained it (``job_config``), in order: what ``runs.get_or_train(configs, launcher=...)``
        then reads from the store.

        Raises:
            RuntimeError: a job ended without finishing its run; the message names the run, the job, its state and
                the end of its stderr.
        """
        wait_for(launch(configs, self, root), self.poll_seconds)
        return [self.job_config(cfg) for cfg in configs]


@dataclass(frozen=True)
class LaunchOutcome:
    """What ``launch`` did with one run: its config (as its job trains it), folder, status and job.

    ``status``: ``"finished"`` (in the store; nothing submitted), ``"submitted"`` (a new job), ``"resubmitted"`` (a new
    job after one that ended without finishing the run, named in ``note``), ``"queued"`` or ``"running"`` (the recorded
    job is active), or ``"unknown"`` (the scheduler gave no answer about the recorded job: nothing submitted).
    """

    config: ExperimentConfig
    run_dir: Path
    status: str
    job_id: str = ""
    state: str = ""  # the scheduler's word for the recorded job, where it was asked
    note: str = ""


def launch(configs: Sequence[ExperimentConfig], launcher: Launcher,
           root: str | Path | None = None) -> list[LaunchOutcome]:
    """Submit a job for each run of ``configs`` that has not finished in the store under ``root`` and has no active
    job; one outcome per distinct run (``job_config`` of each config), in order.

    Each run's check and submission run under ``.launch.lock`` in its folder, so two launches at once submit it once.

    Raises:
        ValueError: a damaged job record (the message names it), or resources a run cannot get (``Launcher.gpus``).
        RuntimeError: a job could not be submitted (sbatch refused it; the message holds sbatch's error); the runs
            submitted before it keep their records.
    """
    from contrastseg.runs import has_finished, run_dir_for

    distinct = list({job_cfg.hash(): job_cfg for job_cfg in map(launcher.job_config, configs)}.values())
    run_dirs = {cfg.hash(): run_dir_for(cfg, root) for cfg in distinct}
    pending = {key: read_record(run_dir) for key, run_dir in run_dirs.items() if not has_finished(run_dir)}
    states = job_states([record for record in pending.values() if record is not None])
    outcomes = []
    for cfg in distinct:
        run_dir = run_dirs[cfg.hash()]
        record = pending.get(cfg.hash())
        if cfg.hash() not in pending:
            outcomes.append(LaunchOutcome(cfg, run_dir, "finished", _recorded_job_id(run_dir)))
            continue
        run_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(run_dir / LAUNCH_LOCK_NAME):
            current = read_record(run_dir)
            if current is not None and (record is None or current.job_id != record.job_id):
                outcomes.append(LaunchOutcome(cfg, run_dir, "submitted", current.job_id,
                                              note="submitted by another launch just now"))
                continue
            state = states.get((record.launcher, record.job_id), UNKNOWN_STATE) if record else ""
            if has_finished(run_dir):
                outcomes.append(LaunchOutcome(cfg, run_dir, "finished", record.job_id if record else "", state))
            elif record is not None and state in ACTIVE_STATES:
                status = "queued" if state in ("PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD") else "running"
                outcomes.append(LaunchOutcome(cfg, run_dir, status, record.job_id, state))
            elif record is not None and state == UNKNOWN_STATE:
                outcomes.append(LaunchOutcome(cfg, run_dir, "unknown", record.job_id, state,
                                              note=f"neither sacct nor squeue answered about job {record.job_id}; "
                                                   f"not resubmitted (delete {JOB_RECORD_NAME} to resubmit)"))
            else:
                earlier = [] if record is None else [*record.earlier, {
                    "job_id": record.job_id, "launcher": record.launcher, "submitted": record.submitted,
                    "state": state}]
                new = launcher.submit(cfg, root, earlier)
                note = "" if record is None else _ended_note(record, state)
                outcomes.append(LaunchOutcome(cfg, run_dir, "resubmitted" if record else "submitted", new.job_id,
                                              note=note))
    return outcomes


def _ended_note(record: JobRecord, state: str) -> str:
    """Why a run is submitted again: how its recorded job ended, and where that job's errors are."""
    return f"job {record.job_id} {_how_it_ended(state)} without finishing the run (its stderr: {record.stderr})"


def _how_it_ended(state: str) -> str:
    return "left the queue" if state == GONE_STATE else f"ended {state}"


def _recorded_job_id(run_dir: Path) -> str:
    """The job id in a finished run's record ("" when a launcher did not train the run, or its record is damaged)."""
    try:
        record = read_record(run_dir)
    except ValueError:
        return ""
    return record.job_id if record else ""


def job_states(records: Sequence[JobRecord]) -> dict[tuple[str, str], str]:
    """The scheduler's state of each recorded job, by (launcher, job id): SLURM's word (PENDING, RUNNING, FAILED,
    CANCELLED, TIMEOUT, COMPLETED, ...); ``GONE_STATE`` for a SLURM job that neither sacct nor squeue lists any more;
    ``UNKNOWN_STATE`` where neither command could be run. A local job is RUNNING while its process lives, then
    COMPLETED or FAILED as its result file says (``GONE_STATE`` when it was killed before writing one)."""
    states = {}
    slurm_ids = sorted({record.job_id for record in records if record.launcher == "slurm"})
    states |= {("slurm", job_id): state for job_id, state in _slurm_states(slurm_ids).items()}
    for record in records:
        if record.launcher == "local":
            states[("local", record.job_id)] = _local_state(record)
    return states


def _slurm_states(job_ids: list[str]) -> dict[str, str]:
    """SLURM states of ``job_ids``: sacct's, through submitit's watcher (one call for all), then squeue's for the
    jobs sacct does not list."""
    if not job_ids:
        return {}
    from submitit.slurm.slurm import SlurmInfoWatcher

    watcher = SlurmInfoWatcher()
    for job_id in job_ids:
        watcher.register_job(job_id)
    watcher.update()  # sacct -j ... ; an error leaves every state UNKNOWN
    states = {job_id: _base_state(watcher.get_state(job_id, mode="cache")) for job_id in job_ids}
    unlisted = [job_id for job_id, state in states.items() if state == UNKNOWN_STATE]
    if unlisted:
        queue = _squeue_states()
        for job_id in unlisted:
            states[job_id] = UNKNOWN_STATE if queue is None else queue.get(job_id, GONE_STATE)
    return states


def _base_state(state: str) -> str:
    """The state word alone: sacct writes "CANCELLED by 1234"."""
    return state.split()[0].upper() if state.strip() else UNKNOWN_STATE


def _squeue_states() -> dict[str, str] | None:
    """The state of each queued or running job of this user (squeue lists no ended job); None when squeue fails."""
    try:
        output = subprocess.run(["squeue", "--noheader", f"--user={getpass.getuser()}", "--format=%i|%T"],
                                capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    states = {}
    for line in output.splitlines():
        job_id, _, state = line.strip().partition("|")
        if job_id:
            states[job_id] = _base_state(state)
    return states


def _local_state(record: JobRecord) -> str:
    """A local job's state: its job id is the pid of submitit's controller process."""
    if _controller_alive(int(record.job_id)):
        return "RUNNING"
    result = Path(record.result)
    if not result.is_file():
        return GONE_STATE
    import pickle

    try:
        with result.open("rb") as handle:
            outcome = pickle.load(handle)[0]
    except (OSError, ValueError, EOFError, pickle.UnpicklingError, IndexError, TypeError):
        return GONE_STATE
    return "COMPLETED" if outcome == "success" else "FAILED"


def _controller_alive(pid: int) -> bool:
    """True while a process with ``pid`` runs submitit's local controller (on Linux its command line says so, which
    tells a recycled pid apart; elsewhere any process with that pid counts)."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    if Path("/proc/self/cmdline").exists():
        try:
            return b"submitit" in cmdline.read_bytes()
        except OSError:
            return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def wait_for(outcomes: Sequence[LaunchOutcome], poll_seconds: float = 30.0) -> None:
    """Wait until the run of every outcome has finished.

    Raises:
        RuntimeError: a run's job ended, or its state is unknown, without the run finishing; the message names each
            such run, its job and state, and the end of the job's stderr.
    """
    from contrastseg.runs import has_finished

    waiting = [outcome for outcome in outcomes if not has_finished(outcome.run_dir)]
    failures = []
    while waiting:
        records = {outcome.run_dir: read_record(outcome.run_dir) for outcome in waiting}
        states = job_states([record for record in records.values() if record is not None])
        still = []
        for outcome in waiting:
            record = records[outcome.run_dir]
            state = states.get((record.launcher, record.job_id), UNKNOWN_STATE) if record else UNKNOWN_STATE
            if has_finished(outcome.run_dir):
                continue
            if state in ACTIVE_STATES:
                still.append(outcome)
                continue
            failures.append(_failure_message(outcome, record, state))
        waiting = still
        if waiting:
            time.sleep(poll_seconds)
    if failures:
        raise RuntimeError("\n\n".join(failures))


def _failure_message(outcome: LaunchOutcome, record: JobRecord | None, state: str) -> str:
    cfg = outcome.config
    if record is None:
        return f"the {cfg.method} run {cfg.hash()} has no job record in {outcome.run_dir}"
    try:
        tail = "\n".join(Path(record.stderr).read_text(errors="replace").splitlines()[-20:])
    except OSError:
        tail = "(no stderr file)"
    return (f"the {cfg.method} run {cfg.hash()} did not finish: its {record.launcher} job {record.job_id} "
            f"{_how_it_ended(state)}; last lines of {record.stderr}:\n{tail}")


STATUS_ORDER = ("finished", "submitted", "resubmitted", "queued", "running", "unknown")


def format_outcomes(outcomes: Sequence[LaunchOutcome]) -> str:
    """One line per run (folder, status, job id, scheduler state, note), then the count per status."""
    header = f"{'run':<34} {'status':<12} {'job':>10}  {'state':<10} note"
    lines = [header, "-" * len(header)]
    for outcome in outcomes:
        lines.append(f"{outcome.run_dir.name:<34} {outcome.status:<12} {outcome.job_id:>10}  {outcome.state:<10} "
                     f"{outcome.note}".rstrip())
    counts = {status: sum(outcome.status == status for outcome in outcomes) for status in STATUS_ORDER}
    lines += ["-" * len(header), f"{len(outcomes)} runs: " + ", ".join(f"{count} {status}" for status, count
                                                                        in counts.items() if count)]
    return "\n".join(lines)
