"""The papermill batch: run every notebook of the manifest with one preset, resume, and write one report.

Usage::

    python -m contrastseg.suite --preset smoke            # CPU, minutes
    python -m contrastseg.suite --preset demo --only tab2  # notebooks whose path contains "tab2"
    python -m contrastseg.suite --preset paper --force     # rerun even the current ones
    python -m contrastseg.suite --preset demo --set steps=200  # a parameter for every notebook (YAML value)
    python -m contrastseg.suite --preset smoke --cell-timeout 600  # stop any cell that runs longer than 10 minutes
    python -m contrastseg.suite --preset paper --dry-run   # the plan: runs, data needed, estimated GPU hours
    python -m contrastseg.suite --preset paper --launcher slurm --slurm-partition gpu --slurm-time 8:00:00
                                                           # each missing run as a SLURM job; rerun to continue

The manifest (``notebooks/manifest.yaml``) is a YAML list; each entry names a notebook, relative to the manifest's
folder or to its parent (the repository root), a title, and optional extra parameters per preset::

    - notebook: notebooks/00_quickstart.ipynb
      title: Quickstart
      parameters:          # optional; a key per preset, each a mapping of primitives
        demo: {epochs: 20}

For a notebook ``<stem>.ipynb`` and a preset, the batch writes the executed copy to ``<out>/<preset>/<stem>.ipynb``
and passes ``results_dir=<out>/<preset>/<stem>/`` (an absolute path), where the notebook saves ``results.json`` and
its figures (`contrastseg.results`). Injected parameters: ``preset``, ``results_dir``, the manifest's parameters
for that preset, then those of ``--set`` (``overrides``), which win, in each notebook that declares them. A manifest
parameter that its notebook does not declare, or a ``--set`` name that no notebook of the batch declares, is an error
before anything runs, listing the valid names. The executed copies hold no progress bars (in their HTML they would
be a red wall of stderr, one output per refresh): each notebook that declares ``show_progress`` gets it ``False``
(``QUIET_PARAMETERS``, unless the manifest or ``--set`` say otherwise), and the kernels run with ``TQDM_DISABLE=1``,
which turns off the text bars that other packages start without an explicit ``disable``. Every notebook runs in
this one Python process through ``papermill.execute_notebook`` (about 1 s of overhead each, against 3.5 s for the
papermill CLI), with the ``python3`` kernel and the notebook's folder as its working directory. A cell that runs
longer than the cell timeout (``--cell-timeout``, default per preset: ``CELL_TIMEOUTS``) is stopped: its notebook
fails, named with the cell, and the batch goes on.

Resume: after each notebook a stamp (``.suite_stamp.json`` in its results folder) records a hash of the notebook's
cell sources and injected parameters, the key of every run the notebook used (``runs.USED_RUNS_ENV``), the keys of
the preset's base configs, and the status. A later batch skips a notebook whose stamp says ``ok`` and is current:
the same text and parameters, the same preset keys, and every run it used still named by its config under this
code's run key (``contrastseg.runs``) and finished in the store. So a notebook reruns exactly when its own text or
one of its runs changed. Failed or interrupted notebooks always run again; ``--force`` reruns every notebook (runs
stay cached); ``--fresh`` also retrains every run that finished before the batch started.

The paper preset runs each notebook once per paper setting that its manifest entry lists under
``parameters: {paper: {settings: [...]}}`` (``contrastseg.paper_settings``), injecting ``preset="paper:<setting>"``;
the executed copy is ``<stem>@<data set>-<model>.ipynb``. Entries without settings are not part of the paper batch.
``--dry-run`` trains nothing: it executes every notebook with ``$CONTRASTSEG_PLAN`` set (``contrastseg.plan``), so
each lists its runs, and prints the plan: runs per notebook, estimated GPU hours, and the data sets needed.

``--launcher slurm`` trains the batch's runs on a SLURM cluster before any notebook executes (``launch_batch``,
``contrastseg.cluster``): the dry run lists the runs, each one the store has not finished is submitted as a job of its
own through submitit (its job id recorded in ``cluster_job.json`` of the run's folder), the command prints one line
per run and exits. The same command again submits nothing for a run whose job is queued or running, resubmits a run
whose job failed or was cancelled (and says which job ended how), and once every planned run has finished it executes
the notebooks as above, which then read the runs from the store. ``--launcher local`` does the same with a subprocess
per run on this machine. The ``--slurm-*`` flags set each job's resources (``cluster.Launcher``).

A failing notebook does not stop the batch. At the end the batch prints each failure (notebook, cell, error), writes
``<out>/<preset>/suite.json`` and ``<out>/<preset>/report.html`` (`contrastseg.report`, which also converts each
executed copy to a static ``<out>/<preset>/<stem>.html`` and links it), and the CLI exits 1.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from contrastseg.extras import import_notebooks_package
from contrastseg.overrides import parse_overrides
from contrastseg.paths import DATA_ENV, RUNS_ENV, data_root, environ
from contrastseg.report import write_report
from contrastseg.results import RESULTS_FILE, VECTOR_FORMATS
from contrastseg.runs import FRESH_SINCE_ENV, USED_RUNS_ENV

PRESETS = ("smoke", "demo", "paper")
DEFAULT_MANIFEST = "notebooks/manifest.yaml"
STAMP_FILE = ".suite_stamp.json"
USED_RUNS_FILE = ".used_runs.jsonl"
KERNEL_NAME = "python3"
RESERVED_PARAMETERS = ("preset", "results_dir")
QUIET_PARAMETERS = {"show_progress": False}
"""Injected into each notebook that declares them, under the manifest's and ``--set``'s values: the library's
progress bars (``progress=show_progress``) stay out of the executed copies. In JupyterLab a notebook keeps its own
default (``True``), and the bars are widgets there (``tqdm.auto``)."""
CELL_TIMEOUTS = {"smoke": 3600, "demo": 7 * 24 * 3600, "paper": 30 * 24 * 3600}
"""Per preset, the default ``--cell-timeout`` in seconds: a cell that runs longer is stopped and fails its notebook.
Far above any honest cell: the longest smoke cell (the claims ledger's training) takes minutes on a 2-core CPU; a
demo or paper cell trains a whole table of runs on a GPU."""
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclasses.dataclass(frozen=True)
class ManifestEntry:
    """One notebook of the manifest."""

    notebook: str  # as written in the manifest
    path: Path  # resolved source notebook
    title: str
    parameters: dict[str, dict[str, Any]]  # preset -> extra parameters

    @property
    def stem(self) -> str:
        return self.path.stem


@dataclasses.dataclass
class NotebookOutcome:
    """What happened to one notebook in a batch."""

    notebook: str
    title: str
    status: str  # "ok" or "failed"
    skipped: bool = False  # True: the executed copy was current, nothing ran
    seconds: float | None = None  # run time (of the previous run when skipped)
    error: str | None = None  # one line: where and what
    cell_index: int | None = None  # failing cell, 0-based, in the source notebook
    exec_count: int | None = None  # its execution count (In [n]) in the executed copy
    ename: str | None = None
    evalue: str | None = None
    traceback: str | None = None
    output: str | None = None  # executed copy
    results_dir: str | None = None
    parameters: dict[str, Any] = dataclasses.field(default_factory=dict)
    provenance: str = ""  # which of its runs were trained at another commit ("" when none)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclasses.dataclass
class SuiteResult:
    """The outcomes of a batch, in manifest order, and the report it wrote."""

    preset: str
    outcomes: list[NotebookOutcome]
    report_path: Path | None = None
    summary_path: Path | None = None

    @property
    def failed(self) -> list[NotebookOutcome]:
        return [o for o in self.outcomes if not o.ok]

    @property
    def ok(self) -> bool:
        return not self.failed


# --------------------------------------------------------------------------------------------------- manifest


def load_manifest(manifest_path: str | os.PathLike = DEFAULT_MANIFEST) -> list[ManifestEntry]:
    """Read and check the manifest; raise ValueError on a malformed one, FileNotFoundError on a missing one."""
    import yaml

    manifest_path = _find_manifest(Path(manifest_path))
    data = yaml.safe_load(manifest_path.read_text(encoding="utf-8")) or []
    if not isinstance(data, list):
        raise ValueError(f"{manifest_path}: expected a YAML list of notebook entries, got {type(data).__name__}")
    entries = []
    for i, raw in enumerate(data):
        where = f"{manifest_path}, entry {i}"
        if isinstance(raw, str):
            raw = {"notebook": raw}
        if not isinstance(raw, dict) or not isinstance(raw.get("notebook"), str):
            raise ValueError(f"{where}: each entry needs a 'notebook' path")
        unknown = set(raw) - {"notebook", "title", "parameters"}
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)}; valid keys: notebook, title, parameters")
        params = raw.get("parameters") or {}
        if not isinstance(params, dict) or not all(isinstance(v, dict) for v in params.values() if v is not None):
            raise ValueError(f"{where}: 'parameters' must map a preset name to a mapping of parameters")
        bad = set(params) - set(PRESETS)
        if bad:
            raise ValueError(f"{where}: unknown presets {sorted(bad)} in 'parameters'; valid presets: {PRESETS}")
        for preset, values in params.items():
            clash = set(values or {}) & set(RESERVED_PARAMETERS)
            if clash:
                raise ValueError(f"{where}: {sorted(clash)} are set by the suite, not the manifest ({preset})")
        _check_settings(where, params)
        path = _resolve_notebook(raw["notebook"], manifest_path.parent)
        entries.append(
            ManifestEntry(
                notebook=raw["notebook"],
                path=path,
                title=str(raw.get("title") or path.stem),
                parameters={k: dict(v or {}) for k, v in params.items()},
            )
        )
    stems = [e.stem for e in entries]
    dupes = sorted({s for s in stems if stems.count(s) > 1})
    if dupes:
        raise ValueError(f"{manifest_path}: notebook names must be unique (they name the output files): {dupes}")
    return entries


def _check_settings(where: str, params: dict) -> None:
    """``settings`` belongs to the paper preset only and must name known paper settings."""
    from contrastseg.paper_settings import SETTINGS

    for preset, values in params.items():
        settings = (values or {}).get("settings")
        if settings is None:
            continue
        if preset != "paper":
            raise ValueError(f"{where}: 'settings' is a paper-preset key, found under {preset!r}")
        if not isinstance(settings, list) or not settings:
            raise ValueError(f"{where}: 'settings' must be a non-empty list of paper settings")
        unknown = [name for name in settings if name not in SETTINGS]
        if unknown:
            raise ValueError(f"{where}: unknown paper settings {unknown}; valid settings: {', '.join(SETTINGS)}")


@dataclasses.dataclass(frozen=True)
class Execution:
    """One notebook run of a batch: the entry, the name of its executed copy, and its injected parameters."""

    entry: ManifestEntry
    name: str
    parameters: dict[str, Any]


def executions(entries: list[ManifestEntry], preset: str) -> list[Execution]:
    """The batch's notebook runs: one per entry, or at the paper preset one per listed setting."""
    runs = []
    for entry in entries:
        values = dict(entry.parameters.get(preset, {}))
        settings = values.pop("settings", None)
        if preset != "paper":
            runs.append(Execution(entry, entry.stem, {"preset": preset, **values}))
            continue
        for setting in settings or []:
            label = "-".join(setting.split("/")[1:])
            runs.append(Execution(entry, f"{entry.stem}@{label}", {"preset": f"paper:{setting}", **values}))
    return runs


def _find_manifest(path: Path) -> Path:
    """``path``; for the default path, run from outside the repository, the manifest of the checkout that holds this
    package (an editable install). An installed package has no notebooks: the error says so and what to do."""
    if path.is_file():
        return path
    fallback = Path(__file__).resolve().parents[2] / DEFAULT_MANIFEST
    if path.is_absolute() or os.fspath(path) != DEFAULT_MANIFEST:
        raise FileNotFoundError(f"manifest not found: {path}")
    if fallback.is_file():
        return fallback
    raise FileNotFoundError(
        f"manifest not found: {DEFAULT_MANIFEST} is neither in the current folder ({Path.cwd()}) nor in a checkout "
        f"around the installed package ({Path(__file__).resolve().parent}). The notebooks are not part of the "
        f"installed package (pip install . installs the library alone): run the suite from a clone of the "
        f"repository (git clone, then pip install -e '.[notebooks]' and python -m contrastseg.suite in it), or pass "
        f"--manifest PATH to the manifest.yaml of a checkout.")


def _resolve_notebook(name: str, manifest_dir: Path) -> Path:
    """A relative path is looked up in the manifest's folder, then in its parent (the repository root)."""
    path = Path(name)
    if path.is_absolute():
        return path
    for base in (manifest_dir, manifest_dir.parent):
        if (base / path).is_file():
            return (base / path).resolve()
    return (manifest_dir.parent / path).resolve()  # missing: reported when it is run


# --------------------------------------------------------------------------------------------------- stamps


def source_hash(notebook_path: str | os.PathLike, parameters: dict[str, Any]) -> str:
    """sha256 of the notebook's cell types and sources (not outputs) and the parameters."""
    nbformat = import_notebooks_package("nbformat", "the notebook suite")

    nb = nbformat.read(os.fspath(notebook_path), as_version=4)
    payload = {"cells": [[cell.cell_type, cell.source] for cell in nb.cells], "parameters": parameters}
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def preset_keys(preset_name: str) -> dict[str, str]:
    """The run key of the preset's base config for every method: a change of a preset (or of the key rules) makes
    the stamps of the notebooks run at it stale, even for the runs a notebook has not asked for yet."""
    from contrastseg.config import preset as preset_config
    from contrastseg.methods import METHODS

    try:
        return {method: preset_config(preset_name, method=method).hash() for method in METHODS}
    except (TypeError, ValueError):  # a preset that needs data paths or settings: its runs still count
        return {}


def used_runs(record_path: Path) -> list[dict]:
    """The runs a notebook used, one ``{"run": folder name, "config": fields}`` per run, from its record file."""
    if not record_path.is_file():
        return []
    records = [json.loads(line) for line in record_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return list({record["run"]: record for record in records}.values())


def provenance_of(records: list[dict], store_root: Path) -> str:
    """``runs.describe_provenance`` of the recorded runs that are in the store."""
    from contrastseg.config import ExperimentConfig
    from contrastseg.engine.train import METRICS_NAME
    from contrastseg.runs import RunResult, describe_provenance

    results = []
    for record in records:
        run_dir = store_root / "store" / record["run"]
        try:
            metrics = json.loads((run_dir / METRICS_NAME).read_text(encoding="utf-8"))
            results.append(RunResult(ExperimentConfig.from_dict(record["config"]), run_dir, metrics))
        except (OSError, TypeError, ValueError):
            continue
    return describe_provenance(results)


def runs_current(records: list[dict], store_root: Path) -> bool:
    """True when every recorded run is still what its config names under this code, and finished."""
    from contrastseg.config import ExperimentConfig
    from contrastseg.engine.train import METRICS_NAME
    from contrastseg.runs import run_dir_for

    for record in records:
        try:
            run_dir = run_dir_for(ExperimentConfig.from_dict(record["config"]), store_root)
        except (TypeError, ValueError):  # a field since removed or renamed
            return False
        if run_dir.name != record["run"] or not (run_dir / METRICS_NAME).is_file():
            return False
    return True


def _read_stamp(results_dir: Path) -> dict:
    try:
        return json.loads((results_dir / STAMP_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _write_stamp(results_dir: Path, stamp: dict) -> None:
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / STAMP_FILE).write_text(json.dumps(stamp, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _clear_results(results_dir: Path) -> None:
    """Remove what a previous run of this notebook left: the stamp, results.json and figures (PNG and vector)."""
    if not results_dir.is_dir():
        return
    figures = [path for suffix in ("png", *VECTOR_FORMATS) for path in results_dir.glob(f"*.{suffix}")]
    for path in [results_dir / STAMP_FILE, results_dir / RESULTS_FILE, *figures]:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


# --------------------------------------------------------------------------------------------------- running


def _source_cell_index(source_path: Path, executed_index: int) -> int:
    """Map a cell index of the executed copy (which has papermill's injected-parameters cell) to the source's."""
    nbformat = import_notebooks_package("nbformat", "the notebook suite")

    try:
        nb = nbformat.read(os.fspath(source_path), as_version=4)
    except Exception:  # noqa: BLE001 - best effort, the executed index is still meaningful
        return executed_index
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    injected_at = tagged[0] + 1 if tagged else 0
    return executed_index - 1 if executed_index > injected_at else executed_index


def run_notebook(execution: Execution, preset_dir: Path, force: bool = False,
                 overrides: dict[str, Any] | None = None, cell_timeout: float | None = None) -> NotebookOutcome:
    """Run one notebook execution with papermill (or skip it when its executed copy is current); never raises
    for a notebook's own failure. ``overrides`` are parameters over the manifest's; a cell running longer than
    ``cell_timeout`` seconds (None: no limit) is stopped and fails the notebook, named with the cell."""
    CellTimeoutError = import_notebooks_package("nbclient.exceptions", "the notebook suite").CellTimeoutError
    PapermillExecutionError = import_notebooks_package("papermill.exceptions",
                                                       "the notebook suite").PapermillExecutionError

    entry = execution.entry
    output = (preset_dir / f"{execution.name}.ipynb").resolve()
    results_dir = (preset_dir / execution.name).resolve()
    parameters = {**execution.parameters, "results_dir": str(results_dir), **(overrides or {})}
    outcome = NotebookOutcome(
        notebook=entry.notebook if execution.name == entry.stem else f"{entry.notebook} ({parameters['preset']})",
        title=entry.title,
        status="failed",
        output=str(output),
        results_dir=str(results_dir),
        parameters=parameters,
    )
    try:
        # the stamp hashes the parameters without the absolute results path, so a moved out folder stays current
        key = source_hash(entry.path, {k: v for k, v in parameters.items() if k != "results_dir"})
    except FileNotFoundError:
        outcome.error = f"notebook not found: {entry.path}"
        outcome.ename, outcome.evalue = "FileNotFoundError", str(entry.path)
        return outcome
    except Exception as exc:  # noqa: BLE001 - unreadable notebook: report it, go on with the others
        outcome.error = f"cannot read notebook: {type(exc).__name__}: {exc}"
        outcome.ename, outcome.evalue = type(exc).__name__, str(exc)
        return outcome

    store_root = Path(os.environ.get(RUNS_ENV) or preset_dir.parent)
    base_keys = preset_keys(parameters["preset"])
    stamp = _read_stamp(results_dir)
    if (not force and stamp.get("key") == key and stamp.get("status") == "ok" and output.is_file()
            and stamp.get("preset_keys") == base_keys and runs_current(stamp.get("runs", []), store_root)):
        outcome.status, outcome.skipped, outcome.seconds = "ok", True, stamp.get("seconds")
        outcome.provenance = provenance_of(stamp["runs"], store_root)
        return outcome

    _clear_results(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    record_path = results_dir / USED_RUNS_FILE
    record_path.unlink(missing_ok=True)
    start = time.perf_counter()
    try:
        with environ(**{USED_RUNS_ENV: str(record_path)}):
            _execute(entry, output, parameters, cell_timeout)
        outcome.status = "ok"
    except CellTimeoutError as exc:
        executed_index = _running_cell_index(output)
        outcome.cell_index = None if executed_index is None else _source_cell_index(entry.path, executed_index)
        outcome.ename, outcome.evalue = "CellTimeoutError", str(exc).strip().splitlines()[0]
        outcome.error = (f"cell {outcome.cell_index}: still running after the cell timeout of {cell_timeout:g} s "
                         f"(--cell-timeout); the kernel was stopped")
    except PapermillExecutionError as exc:

        outcome.cell_index = _source_cell_index(entry.path, exc.cell_index)
        outcome.exec_count = exc.exec_count
        outcome.ename, outcome.evalue = exc.ename, exc.evalue
        outcome.traceback = _ANSI.sub("", "\n".join(exc.traceback or []))
        outcome.error = f"cell {outcome.cell_index} (In [{exc.exec_count}]): {exc.ename}: {exc.evalue}"
    except Exception as exc:  # noqa: BLE001 - missing kernel, bad JSON, ...: report it, go on with the others
        outcome.ename, outcome.evalue = type(exc).__name__, str(exc)
        outcome.error = f"{type(exc).__name__}: {exc}"
    outcome.seconds = round(time.perf_counter() - start, 2)
    used = used_runs(record_path)
    outcome.provenance = provenance_of(used, store_root)
    _write_stamp(results_dir, {"key": key, "status": outcome.status, "seconds": outcome.seconds,
                               "preset_keys": base_keys, "runs": used})
    return outcome


def _running_cell_index(executed_path: Path) -> int | None:
    """The index (in the executed copy) of the cell that was running when papermill stopped: the last cell with a
    start time (papermill saves each cell's times as it goes, and marks every cell "completed" at the end); None when
    the copy cannot be read."""
    try:
        cells = json.loads(executed_path.read_text(encoding="utf-8"))["cells"]
    except (OSError, ValueError, KeyError):
        return None
    started = [index for index, cell in enumerate(cells)
               if (cell.get("metadata", {}).get("papermill") or {}).get("start_time")]
    return started[-1] if started else None


def _execute(entry: ManifestEntry, output: Path, parameters: dict[str, Any], cell_timeout: float | None = None) -> None:
    papermill = import_notebooks_package("papermill", "the notebook suite")

    papermill.execute_notebook(
        os.fspath(entry.path),
        os.fspath(output),
        parameters=parameters,
        kernel_name=KERNEL_NAME,
        progress_bar=False,
        execution_timeout=cell_timeout,
        cwd=os.fspath(entry.path.parent),
        # ipykernel warns on every start that it runs over TCP without encryption (harmless, local);
        # keep that out of the progress bar. Errors of the kernel app still show.
        extra_arguments=["--IPKernelApp.log_level=ERROR"],
    )


def run_suite(
    preset: str,
    manifest_path: str | os.PathLike = DEFAULT_MANIFEST,
    out_root: str | os.PathLike = "runs",
    force: bool = False,
    only: str | None = None,
    progress: bool = True,
    overrides: dict[str, Any] | None = None,
    fresh: bool = False,
    cell_timeout: float | None = None,
) -> SuiteResult:
    """Run the manifest's notebooks with ``preset``; see the module docstring.

    Args:
        preset: one of ``smoke``, ``demo``, ``paper``.
        manifest_path: the YAML manifest.
        out_root: the batch writes under ``out_root/preset``.
        force: rerun notebooks whose executed copy is current.
        only: run only the notebooks whose manifest path contains this substring.
        progress: show a progress bar over notebooks (stderr).
        overrides: parameters over the manifest's (e.g. ``{"steps": 200}``), injected into every notebook that
            declares them; a name that no notebook of the batch declares is an error (``check_parameters``).
        fresh: retrain every run that had finished before the batch started (and rerun every notebook).
        cell_timeout: seconds a cell may run before it is stopped and fails its notebook (the batch goes on);
            None: the preset's ``CELL_TIMEOUTS``.
    """
    from tqdm.auto import tqdm

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    reserved = sorted(set(overrides or {}) & set(RESERVED_PARAMETERS))
    if reserved:
        raise ValueError(f"the suite sets {', '.join(reserved)} itself; it cannot be overridden")
    planned = executions(_select(load_manifest(manifest_path), only), preset)
    overrides_of = check_parameters(planned, overrides or {}, defaults=QUIET_PARAMETERS)
    cell_timeout = CELL_TIMEOUTS[preset] if cell_timeout is None else cell_timeout
    preset_dir = Path(out_root) / preset
    preset_dir.mkdir(parents=True, exist_ok=True)

    result = SuiteResult(preset=preset, outcomes=[])
    bar = tqdm(planned, desc=f"suite {preset}", unit="nb", file=sys.stderr, disable=not progress)
    fresh_since = {FRESH_SINCE_ENV: repr(time.time())} if fresh else {}
    with environ(MPLBACKEND="agg", **_kernel_environment(out_root), **fresh_since):
        for execution in bar:
            bar.set_postfix_str(execution.name)
            result.outcomes.append(run_notebook(execution, preset_dir, force=force or fresh,
                                                overrides=overrides_of[execution.name], cell_timeout=cell_timeout))
            result.summary_path = _write_summary(preset_dir, result)  # up to date if the batch is interrupted
    bar.close()
    result.summary_path = _write_summary(preset_dir, result)
    result.report_path = write_report(preset_dir, result.outcomes, title=f"contrastseg notebook suite: {preset}")
    return result


def notebook_parameters(notebook_path: str | os.PathLike) -> list[str]:
    """The names the notebook's ``parameters`` cell assigns, in order (``papermill.inspect_notebook``)."""
    papermill = import_notebooks_package("papermill", "the notebook suite")

    return list(papermill.inspect_notebook(os.fspath(notebook_path)))


def check_parameters(planned: list[Execution], overrides: dict[str, Any],
                     defaults: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """The parameters each execution gets over its manifest entry's (by name): the ``defaults`` that its notebook
    declares and its manifest entry does not set (``QUIET_PARAMETERS``), then the overrides its notebook declares.

    Raises:
        ValueError: a manifest parameter that its notebook does not declare, or an override that no notebook of the
            batch declares (a typo such as ``--set stepz=5``); the message lists the valid names.
    """
    declared = {execution.name: notebook_parameters(execution.entry.path) for execution in planned
                if execution.entry.path.is_file()}
    for execution in planned:
        names = declared.get(execution.name)
        unknown = [name for name in execution.parameters if names is not None and name not in names
                   and name not in RESERVED_PARAMETERS]
        if unknown:
            raise ValueError(f"the manifest gives {execution.entry.notebook} the parameter(s) {', '.join(unknown)}, "
                             f"which it does not have; its parameters: {', '.join(names)}")
    everywhere = sorted({name for names in declared.values() for name in names} - set(RESERVED_PARAMETERS))
    unknown = [name for name in overrides if name not in everywhere]
    if unknown:
        which = (f"{planned[0].entry.notebook}'s parameters" if len(declared) == 1
                 else "the parameters of this batch's notebooks")
        raise ValueError(f"--set {', '.join(unknown)}: no notebook of this batch has such a parameter; "
                         f"{which}: {', '.join(everywhere)}")
    return {execution.name: {**{name: value for name, value in (defaults or {}).items()
                                if name in declared.get(execution.name, ()) and name not in execution.parameters},
                             **{name: value for name, value in overrides.items()
                                if name in declared.get(execution.name, overrides)}} for execution in planned}


def _select(entries: list[ManifestEntry], only: str | None) -> list[ManifestEntry]:
    return [e for e in entries if only in e.notebook] if only else entries


def _kernel_environment(out_root: str | os.PathLike) -> dict[str, str]:
    """What the kernels inherit: one run store with the batch ($CONTRASTSEG_RUNS if set, else the batch's
    out_root), the data root as an absolute path (kernels run in the notebooks' folders), and no text progress bars
    (tqdm >= 4.66 reads ``TQDM_DISABLE`` when it is imported, as the default of ``disable``)."""
    return {RUNS_ENV: os.environ.get(RUNS_ENV) or str(Path(out_root).resolve()),
            DATA_ENV: str(data_root().resolve()), "TQDM_DISABLE": "1"}


def plan_suite(preset: str, manifest_path: str | os.PathLike = DEFAULT_MANIFEST, only: str | None = None,
               overrides: dict[str, Any] | None = None, progress: bool = True) -> list:
    """Execute every notebook of the batch in dry-run mode and return what each would train.

    Returns:
        One ``contrastseg.plan.PlannedNotebook`` per notebook execution, in batch order.
    """
    import tempfile

    from tqdm.auto import tqdm

    from contrastseg.plan import PLAN_ENV, PlannedNotebook, read_plan

    papermill = import_notebooks_package("papermill", "the suite's dry run")

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    planned = executions(_select(load_manifest(manifest_path), only), preset)
    overrides_of = check_parameters(planned, overrides or {}, defaults=QUIET_PARAMETERS)
    notebooks = []
    with tempfile.TemporaryDirectory(prefix="contrastseg-plan-") as scratch:
        for index, execution in enumerate(tqdm(planned, desc=f"plan {preset}", unit="nb", file=sys.stderr,
                                               disable=not progress)):
            record_path = Path(scratch) / f"{index}.jsonl"
            parameters = {**execution.parameters, "results_dir": str(Path(scratch) / execution.name),
                          **overrides_of[execution.name]}
            error = ""
            with environ(MPLBACKEND="agg", **_kernel_environment(scratch), **{PLAN_ENV: str(record_path)}):
                try:
                    papermill.execute_notebook(
                        os.fspath(execution.entry.path), os.fspath(Path(scratch) / f"{execution.name}.ipynb"),
                        parameters=parameters, kernel_name=KERNEL_NAME, progress_bar=False,
                        cwd=os.fspath(execution.entry.path.parent),
                        extra_arguments=["--IPKernelApp.log_level=ERROR"])
                except Exception as exc:  # noqa: BLE001 - a cell after the training calls needs a trained model
                    error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1][:200] if str(exc) else ''}"
            notebooks.append(PlannedNotebook(execution.name, execution.parameters["preset"],
                                             read_plan(record_path), error))
    return notebooks


def _write_summary(preset_dir: Path, result: SuiteResult) -> Path:
    keep = ("status", "skipped", "seconds", "error", "cell_index", "exec_count", "output", "results_dir")
    data = {
        "preset": result.preset,
        "ok": result.ok,
        "notebooks": {o.notebook: {k: getattr(o, k) for k in keep} for o in result.outcomes},
    }
    path = preset_dir / "suite.json"
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path


def format_failures(result: SuiteResult) -> str:
    """The failures of a batch, one block per notebook: path, failing cell and error, and the executed copy."""
    lines = []
    for o in result.failed:
        lines.append(f"FAILED {o.notebook}")
        lines.append(f"  {o.error}")
        if o.output and o.cell_index is not None:
            lines.append(f"  executed copy: {o.output}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI; returns the exit status (0: all ok, 1: a notebook failed, 2: bad manifest or arguments)."""
    parser = argparse.ArgumentParser(
        prog="python -m contrastseg.suite", description="Run the notebook suite with papermill and write a report."
    )
    parser.add_argument("--preset", choices=PRESETS, default="smoke", help="parameter preset (default: smoke)")
    parser.add_argument("--force", action="store_true", help="rerun notebooks whose executed copy is current")
    parser.add_argument("--fresh", action="store_true",
                        help="also retrain every run that finished before this batch (implies --force)")
    parser.add_argument("--only", metavar="SUBSTRING", help="run only notebooks whose path contains SUBSTRING")
    parser.add_argument("--out", default="runs", metavar="DIR", help="output root (default: runs)")
    parser.add_argument("--manifest", default=DEFAULT_MANIFEST, metavar="FILE", help=f"default: {DEFAULT_MANIFEST}")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a parameter for every notebook, VALUE read as YAML (e.g. steps=200, seeds=[0,1]); "
                             "repeatable")
    parser.add_argument("--cell-timeout", type=float, metavar="SECONDS",
                        help="stop a cell that runs longer and fail its notebook; the batch goes on (default per "
                             "preset: " + ", ".join(f"{name} {seconds:g} s" for name, seconds in CELL_TIMEOUTS.items())
                             + ")")
    parser.add_argument("--dry-run", action="store_true",
                        help="train nothing; print the runs each notebook would train, the data needed and an "
                             "estimate of the GPU hours")
    parser.add_argument("--tflops", type=float, default=None, metavar="T",
                        help="sustained TFLOP/s per GPU assumed by the dry run's estimate")
    add_launcher_arguments(parser)
    args = parser.parse_args(argv)
    check_launcher_arguments(parser, args)
    try:
        overrides = parse_overrides(args.set)
    except ValueError as exc:
        parser.error(str(exc))
    if args.dry_run:
        return _dry_run(args, overrides)
    if args.launcher:
        status = launch_batch(args, overrides)
        if status is not None:
            return status

    try:
        result = run_suite(
            args.preset, args.manifest, args.out, force=args.force, only=args.only, progress=not args.no_progress,
            overrides=overrides, fresh=args.fresh, cell_timeout=args.cell_timeout,
        )
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not result.outcomes:
        print(f"error: no notebook in {args.manifest} matches --only {args.only!r}", file=sys.stderr)
        return 2

    n_skipped = sum(o.skipped for o in result.outcomes)
    print(
        f"{len(result.outcomes)} notebooks: {len(result.outcomes) - len(result.failed)} ok "
        f"({n_skipped} skipped as current), {len(result.failed)} failed"
    )
    if result.failed:
        print(format_failures(result))
    print(f"report: {result.report_path}")
    return 0 if result.ok else 1


def add_launcher_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``--launcher`` (``launch_batch``)."""
    from contrastseg.cluster import LAUNCHERS

    group = parser.add_argument_group("cluster launcher", "train the batch's runs as jobs before the notebooks run "
                                      "(contrastseg.cluster); rerun the same command to continue")
    group.add_argument("--launcher", choices=LAUNCHERS,
                       help="submit each planned run that has not finished as a job (slurm: sbatch; local: a "
                            "subprocess per run), print their states and exit; once all have finished, run the "
                            "notebooks")
    group.add_argument("--slurm-partition", metavar="NAME", help="the partition of every job")
    group.add_argument("--slurm-time", metavar="TIME",
                       help="each job's time limit: minutes, HH:MM:SS or D-HH:MM:SS (required with --launcher "
                            "slurm)")
    group.add_argument("--slurm-gpus-per-run", type=int, metavar="N",
                       help="GPUs of each job, on one node (default: the run's num_devices)")
    group.add_argument("--slurm-cpus-per-gpu", type=int, metavar="N",
                       help="CPUs per GPU (per process for CPU runs; default: the run's num_threads + num_workers)")
    group.add_argument("--slurm-account", metavar="NAME", help="the account every job is charged to")
    group.add_argument("--slurm-extra", action="append", default=[], metavar="KEY=VALUE",
                       help="any other sbatch option, without its dashes (e.g. mem=64G, constraint=a100, qos=high); "
                            "repeatable")
    group.add_argument("--slurm-folder", metavar="DIR",
                       help="where submitit writes job scripts and logs, %%j being the job id (default: "
                            "<runs root>/slurm/%%j; local: <runs root>/local)")


def check_launcher_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """A ``--slurm-*`` flag without ``--launcher`` is an error (it would have no effect)."""
    given = [f"--{name.replace('_', '-')}" for name, value in vars(args).items()
             if name.startswith("slurm_") and value not in (None, [])]
    if given and not args.launcher:
        parser.error(f"{', '.join(given)} set(s) the jobs of --launcher; add --launcher slurm (or local)")


def launcher_from_arguments(args: argparse.Namespace):
    """The ``cluster.Launcher`` that ``--launcher`` and the ``--slurm-*`` flags describe.

    Raises:
        ValueError: a flag's value is invalid, or missing (``--slurm-time`` for SLURM); the message names the flag.
    """
    from contrastseg.cluster import Launcher, parse_extra, parse_time

    return Launcher(args.launcher, time_minutes=parse_time(args.slurm_time) if args.slurm_time else None,
                    partition=args.slurm_partition, account=args.slurm_account,
                    gpus_per_run=args.slurm_gpus_per_run, cpus_per_gpu=args.slurm_cpus_per_gpu,
                    extra=parse_extra(args.slurm_extra), folder=args.slurm_folder)


def launch_batch(args: argparse.Namespace, overrides: dict[str, Any]) -> int | None:
    """``--launcher``: plan the batch, submit each planned run that has not finished and has no active job, and
    print a line per run. Returns the exit status when the command ends here (runs still to train: 0; bad flags or
    manifest: 2; a run the jobs cannot train here: 1), None when every planned run has finished and the notebooks
    are to run."""
    from contrastseg.cluster import format_outcomes, launch

    if args.fresh:
        print("error: --fresh retrains in this process; with --launcher, delete the runs' folders of the store "
              "to train them afresh", file=sys.stderr)
        return 2
    try:
        launcher = launcher_from_arguments(args)
        notebooks = plan_suite(args.preset, args.manifest, args.only, overrides, progress=not args.no_progress)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    root = _kernel_environment(args.out)[RUNS_ENV]
    configs = [cfg for notebook in notebooks for cfg in notebook.configs]
    try:
        outcomes = launch(configs, launcher, root)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # the scheduler refused a job
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"launcher {launcher.kind}, preset {args.preset}, runs store {Path(root) / 'store'}:")
    print(format_outcomes(outcomes))
    for notebook in notebooks:
        if notebook.error:
            print(f"planning of {notebook.name} stopped at {notebook.error}: runs it asks for after that point "
                  f"are not in this list, and train in the notebook's own process when it runs")
    if not all(outcome.status == "finished" for outcome in outcomes):
        print(f"job logs under {launcher.job_folder(root)}; rerun this command to see the jobs' states, and to "
              f"run the notebooks once every run has finished")
        return 0
    elsewhere = {cfg.hash() for cfg in configs if launcher.job_config(cfg).hash() != cfg.hash()}
    if elsewhere:
        print(f"every planned run has finished, but {len(elsewhere)} of them trained on GPUs and this machine names "
              f"them differently (the run key holds the numerics class: device='auto' resolves here to the CPU); "
              f"run this command on a GPU node to execute the notebooks, e.g. srun --gpus 1 python -m "
              f"contrastseg.suite ...", file=sys.stderr)
        return 1
    print("every planned run has finished: running the notebooks")
    return None


def _dry_run(args, overrides: dict[str, Any]) -> int:
    from contrastseg.plan import ASSUMED_TFLOPS, format_plan

    try:
        notebooks = plan_suite(args.preset, args.manifest, args.only, overrides, progress=not args.no_progress)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not notebooks:
        print(f"error: no notebook of {args.manifest} runs at preset {args.preset!r}"
              + (f" with --only {args.only!r}" if args.only else ""), file=sys.stderr)
        return 2
    print(f"dry run, preset {args.preset}: nothing was trained")
    print(format_plan(notebooks, args.tflops or ASSUMED_TFLOPS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
