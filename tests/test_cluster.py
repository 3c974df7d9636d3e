"""The cluster launcher (contrastseg.cluster, and ``--launcher`` of the suite) on a CPU machine without SLURM.

The local launcher runs submitit's LocalExecutor for real: a job per run, in a subprocess, trained by
``runs.get_or_train`` into the store. The SLURM path runs submitit's SlurmExecutor against stand-ins for ``sbatch``,
``sacct``, ``squeue`` and ``srun`` written into a folder put first on PATH (``fake_slurm``): they record their calls,
keep the jobs' states in a JSON file that a test sets, and print what SLURM prints. No stand-in runs a job.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import time
from pathlib import Path

import pytest

from contrastseg import cluster, runs
from contrastseg.cluster import JOB_RECORD_NAME, Launcher, launch, parse_extra, parse_time, read_record
from contrastseg.config import smoke
from contrastseg.engine.train import LOG_NAME, METRICS_NAME
from contrastseg.suite import main
from test_suite import write_notebook

SBATCH = """\
import json, sys
from pathlib import Path
state = Path(__file__).parent
if (state / "sbatch_fails").exists():
    sys.exit("sbatch: error: invalid partition specified: nope")
counter = state / "next_id"
job = int(counter.read_text()) if counter.exists() else 1001
counter.write_text(str(job + 1))
(state / f"sbatch_{job}.sh").write_text(Path(sys.argv[-1]).read_text())
with open(state / "calls.jsonl", "a") as calls:
    calls.write(json.dumps({"command": "sbatch", "args": sys.argv[1:]}) + "\\n")
jobs_file = state / "jobs.json"
jobs = json.loads(jobs_file.read_text()) if jobs_file.exists() else {}
jobs[str(job)] = "PENDING"
jobs_file.write_text(json.dumps(jobs))
print(f"Submitted batch job {job}")
"""

SACCT = """\
import json, sys
from pathlib import Path
state = Path(__file__).parent
with open(state / "calls.jsonl", "a") as calls:
    calls.write(json.dumps({"command": "sacct", "args": sys.argv[1:]}) + "\\n")
if (state / "sacct_fails").exists():
    sys.exit("sacct: error: Slurm accounting storage is disabled")
jobs = json.loads((state / "jobs.json").read_text())
forgotten = json.loads((state / "sacct_forgets.json").read_text()) if (state / "sacct_forgets.json").exists() else []
asked = [sys.argv[i + 1] for i, arg in enumerate(sys.argv) if arg == "-j"]
print("JobID|State|NodeList")
for job in asked:
    if job in jobs and job not in forgotten:
        print(f"{job}|{jobs[job]}|gpu-node-1")
        print(f"{job}.batch|{jobs[job]}|gpu-node-1")
"""

SQUEUE = """\
import json, sys
from pathlib import Path
state = Path(__file__).parent
with open(state / "calls.jsonl", "a") as calls:
    calls.write(json.dumps({"command": "squeue", "args": sys.argv[1:]}) + "\\n")
if (state / "squeue_fails").exists():
    sys.exit("squeue: error: Unable to contact slurm controller")
jobs = json.loads((state / "jobs.json").read_text())
for job, job_state in jobs.items():
    if job_state in ("PENDING", "RUNNING", "COMPLETING"):
        print(f"{job}|{job_state}")
"""


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """A folder of SLURM stand-ins, first on PATH; returns it. ``jobs.json`` maps job id -> state (the test sets
    it), ``calls.jsonl`` records every call, ``sbatch_<id>.sh`` is each submitted script."""
    folder = tmp_path / "fake_slurm"
    folder.mkdir()
    for name, body in (("sbatch", SBATCH), ("sacct", SACCT), ("squeue", SQUEUE), ("srun", "")):
        script = folder / name
        script.write_text(f"#!{sys.executable}\n{body}")
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return folder


def set_states(folder: Path, **states: str) -> None:
    jobs = json.loads((folder / "jobs.json").read_text())
    jobs.update({job.lstrip("j"): state for job, state in states.items()})
    (folder / "jobs.json").write_text(json.dumps(jobs))


def sbatch_calls(folder: Path) -> int:
    lines = (folder / "calls.jsonl").read_text().splitlines() if (folder / "calls.jsonl").exists() else []
    return sum(json.loads(line)["command"] == "sbatch" for line in lines)


def tiny(**fields):
    """The smallest smoke run that trains: 4 steps on 16 images, one thread."""
    return smoke(**{"steps": 4, "num_train": 16, "num_val": 4, "batch_size": 4, "num_threads": 1} | fields)


def wait_until_ended(run_dirs, seconds: float = 180) -> None:
    """Wait until the recorded job of every run folder has ended (a local job: its process is gone)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        records = [read_record(run_dir) for run_dir in run_dirs]
        states = cluster.job_states(records)
        if all(states[(record.launcher, record.job_id)] not in cluster.ACTIVE_STATES for record in records):
            return
        time.sleep(0.5)
    raise TimeoutError(f"the jobs of {run_dirs} still run after {seconds} s")


# ------------------------------------------------------------------------------------------------ options


def test_time_limits_read_as_slurm_writes_them():
    assert parse_time("240") == 240 and parse_time(90) == 90
    assert parse_time("4:00:00") == 240 and parse_time("0:30:30") == 31  # seconds round up
    assert parse_time("1-12:00:00") == 36 * 60
    for bad in ("4h", "4:00", "", "0", "0:00:00"):
        with pytest.raises(ValueError, match="--slurm-time"):
            parse_time(bad)
    assert parse_extra(["mem=64G", "constraint = a100"]) == {"mem": "64G", "constraint": "a100"}
    for bad in ("mem", "=64G", "--mem=64G"):
        with pytest.raises(ValueError, match="--slurm-extra wants KEY=VALUE"):
            parse_extra([bad])


def test_launcher_options_are_checked_and_name_the_flag():
    with pytest.raises(ValueError, match="unknown launcher 'pbs'; valid launchers: slurm, local"):
        Launcher("pbs")
    with pytest.raises(ValueError, match="--slurm-time is required"):
        Launcher("slurm")
    with pytest.raises(ValueError, match="--slurm-partition, --slurm-extra apply to --launcher slurm only"):
        Launcher("local", partition="gpu", extra={"mem": "8G"})
    with pytest.raises(ValueError, match="--slurm-gpus-per-run 2 is below num_devices=4"):
        Launcher("slurm", time_minutes=60, gpus_per_run=2).gpus(tiny(num_devices=4))
    with pytest.raises(ValueError, match="device='cuda'.*no GPU"):
        Launcher("slurm", time_minutes=60, gpus_per_run=0).gpus(tiny(device="cuda"))


def test_the_job_config_names_the_run_as_the_jobs_node_does():
    """device="auto" resolves where the key is computed: a SLURM job with GPUs trains (and is recorded) as a CUDA
    run, a job without GPUs as a CPU run; no other field changes."""
    cfg = tiny()
    on_gpus = Launcher("slurm", time_minutes=60).job_config(cfg)
    on_cpus = Launcher("slurm", time_minutes=60, gpus_per_run=0).job_config(cfg)
    assert on_gpus == cfg.replace(device="cuda") and on_gpus.numerics() == "cuda-bf16"
    assert on_cpus == cfg.replace(device="cpu") and on_cpus.hash() == cfg.hash()  # this machine has no GPU
    assert Launcher("slurm", time_minutes=60).job_config(tiny(device="cpu")) == tiny(device="cpu")


def test_a_requeued_job_calls_the_same_run_again():
    args = (tiny().to_dict(), "/runs", {"CONTRASTSEG_RUNS": "/runs"})
    again = cluster.TrainRun().checkpoint(*args)
    assert isinstance(again.function, cluster.TrainRun) and again.args == args


# ------------------------------------------------------------------------------------------------ SLURM


def test_sbatch_script_asks_for_the_resources_and_the_job_id_lands_in_the_run_folder(fake_slurm, tmp_path):
    root = tmp_path / "runs"
    launcher = Launcher("slurm", time_minutes=parse_time("1:30:00"), partition="gpu", account="proj",
                        cpus_per_gpu=6, extra={"constraint": "a100", "mem": "64G"})
    cfg = tiny(num_devices=2)
    [outcome] = launch([cfg], launcher, root)
    assert (outcome.status, outcome.job_id) == ("submitted", "1001")
    assert outcome.run_dir == runs.run_dir_for(cfg.replace(device="cuda"), root)
    record = read_record(outcome.run_dir)
    assert record.launcher == "slurm" and record.job_id == "1001"
    assert record.stdout == str(root / "slurm" / "1001" / "1001_0_log.out")
    assert Path(record.submission_file).read_text() == (fake_slurm / "sbatch_1001.sh").read_text()
    script = (fake_slurm / "sbatch_1001.sh").read_text().splitlines()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --time=90", "#SBATCH --gpus-per-node=2",
                 "#SBATCH --cpus-per-task=12", "#SBATCH --nodes=1", "#SBATCH --ntasks-per-node=1",
                 "#SBATCH --account=proj", "#SBATCH --constraint=a100", "#SBATCH --mem=64G",
                 f"#SBATCH --job-name=ce-{cfg.replace(device='cuda').hash()}"):
        assert line in script
    assert any("submitit.core._submit" in line for line in script)
    submitted = pickle.loads(next((root / "slurm" / "1001").glob("*_submitted.pkl")).read_bytes())
    assert submitted.args[0] == cfg.replace(device="cuda").to_dict()  # the job trains the run it is recorded as


def test_a_queued_or_running_job_is_left_alone_a_failed_or_cancelled_one_is_resubmitted(fake_slurm, tmp_path):
    root = tmp_path / "runs"
    launcher = Launcher("slurm", time_minutes=60)
    configs = [tiny(seed=0), tiny(seed=1)]
    first = launch(configs, launcher, root)
    assert [(o.status, o.job_id) for o in first] == [("submitted", "1001"), ("submitted", "1002")]

    set_states(fake_slurm, j1001="RUNNING", j1002="PENDING")
    again = launch(configs, launcher, root)
    assert [(o.status, o.job_id, o.state) for o in again] == [("running", "1001", "RUNNING"),
                                                             ("queued", "1002", "PENDING")]
    assert sbatch_calls(fake_slurm) == 2

    set_states(fake_slurm, j1001="FAILED", j1002="CANCELLED by 4242")
    resubmitted = launch(configs, launcher, root)
    assert [(o.status, o.job_id) for o in resubmitted] == [("resubmitted", "1003"), ("resubmitted", "1004")]
    assert "job 1001 ended FAILED without finishing the run" in resubmitted[0].note
    assert "job 1002 ended CANCELLED" in resubmitted[1].note
    earlier = read_record(resubmitted[1].run_dir).earlier
    assert [(job["job_id"], job["state"]) for job in earlier] == [("1002", "CANCELLED")]
    table = cluster.format_outcomes(resubmitted)
    assert "resubmitted" in table and "2 runs: 2 resubmitted" in table

    # sacct does not list either new job (no accounting, or too fresh): squeue tells the queued one from the gone one
    (fake_slurm / "sacct_forgets.json").write_text(json.dumps(["1003", "1004"]))
    set_states(fake_slurm, j1003="PENDING", j1004="FAILED")
    asked_squeue = launch(configs, launcher, root)
    assert [(o.status, o.job_id) for o in asked_squeue] == [("queued", "1003"), ("resubmitted", "1005")]
    assert "job 1004 left the queue without finishing the run" in asked_squeue[1].note

    # neither command answers: the state is unknown and nothing is submitted
    (fake_slurm / "sacct_fails").touch()
    (fake_slurm / "squeue_fails").touch()
    unknown = launch(configs, launcher, root)
    assert [o.status for o in unknown] == ["unknown", "unknown"] and sbatch_calls(fake_slurm) == 5
    assert "not resubmitted" in unknown[0].note


def test_a_refused_submission_is_an_error_with_sbatchs_message(fake_slurm, tmp_path):
    (fake_slurm / "sbatch_fails").touch()
    with pytest.raises(RuntimeError, match=r"slurm job of the ce run \w+ could not be submitted.*invalid partition"):
        launch([tiny()], Launcher("slurm", time_minutes=60, partition="nope"), tmp_path / "runs")
    assert not list((tmp_path / "runs" / "store").glob(f"*/{JOB_RECORD_NAME}"))


def test_suite_launcher_flags_are_checked_before_anything_runs(fake_slurm, tmp_path, capsys):
    manifest = tmp_path / "missing.yaml"  # never read: the flags fail first
    assert main(["--manifest", str(manifest), "--launcher", "slurm", "--no-progress"]) == 2
    assert "--slurm-time is required" in capsys.readouterr().err
    assert main(["--manifest", str(manifest), "--launcher", "slurm", "--slurm-time", "4h", "--no-progress"]) == 2
    assert "HH:MM:SS" in capsys.readouterr().err
    assert main(["--manifest", str(manifest), "--launcher", "local", "--slurm-account", "a", "--no-progress"]) == 2
    assert "apply to --launcher slurm only" in capsys.readouterr().err
    assert main(["--manifest", str(manifest), "--launcher", "local", "--fresh", "--no-progress"]) == 2
    with pytest.raises(SystemExit):
        main(["--manifest", str(manifest), "--slurm-time", "60"])
    assert "--slurm-time set(s) the jobs of --launcher" in capsys.readouterr().err
    assert sbatch_calls(fake_slurm) == 0


# ------------------------------------------------------------------------------------------------ local jobs


@pytest.mark.multiprocess
def test_a_local_job_trains_the_run_and_get_or_train_then_reads_it(tmp_path):
    root = tmp_path / "runs"
    cfg = tiny()
    launcher = Launcher("local", poll_seconds=0.2)
    [submitted] = launch([cfg], launcher, root)
    [again] = launch([cfg], launcher, root)  # at once: the job's process is still importing torch
    assert submitted.status == "submitted" and int(submitted.job_id) > 0
    assert (again.status, again.job_id, again.state) == ("running", submitted.job_id, "RUNNING")
    assert len(list((root / "local").glob("*_submitted.pkl"))) == 1  # one job
    record = read_record(submitted.run_dir)
    assert record.job_id == submitted.job_id and record.launcher == "local"

    cluster.wait_for([submitted], poll_seconds=0.2)
    assert runs.has_finished(submitted.run_dir)
    outcome, returned = pickle.loads(Path(record.result).read_bytes())
    assert outcome == "success" and returned["run"] == submitted.run_dir.name
    trained_at = (submitted.run_dir / LOG_NAME).stat().st_mtime_ns

    [result] = runs.get_or_train([cfg], root=root, launcher=launcher)  # finished: nothing submitted, nothing trained
    assert result.run_dir == submitted.run_dir and result.metrics["val"] == returned["val"]
    assert (submitted.run_dir / LOG_NAME).stat().st_mtime_ns == trained_at
    assert launch([cfg], launcher, root)[0].status == "finished"
    assert len(list((root / "local").glob("*_submitted.pkl"))) == 1

    in_process = runs.get_or_train(cfg, root=tmp_path / "in_process", progress=False)
    assert in_process.metrics["val"] == result.metrics["val"]  # the job trains what this process would


@pytest.mark.multiprocess
def test_a_failed_local_job_is_named_by_get_or_train_and_resubmitted(tmp_path):
    root = tmp_path / "runs"
    cfg = tiny(dataset="cityscapes", data_root=str(tmp_path / "no_cityscapes"))  # fails before its first step
    launcher = Launcher("local", poll_seconds=0.2)
    with pytest.raises(RuntimeError, match=r"did not finish: its local job \d+ ended FAILED"):
        runs.get_or_train([cfg], root=root, launcher=launcher)
    [again] = launch([cfg], launcher, root)
    assert again.status == "resubmitted" and "ended FAILED without finishing the run" in again.note
    with pytest.raises(ValueError, match="launcher is for a list of configs"):
        runs.get_or_train(cfg, root=root, launcher=launcher)
    with pytest.raises(ValueError, match="not with slots, nor with force"):
        runs.get_or_train([cfg], root=root, launcher=launcher, force=True)
    wait_until_ended([again.run_dir])


# ------------------------------------------------------------------------------------------------ the suite


TRAINS = """\
from contrastseg import runs
from contrastseg.config import smoke
from contrastseg.results import save_results
[result] = runs.get_or_train([smoke(steps=4, num_train=16, num_val=4, batch_size=4, num_threads=1, seed=seed)])
save_results(results_dir, {"miou": result.metrics["val"]["miou"], "run": result.run_dir.name})
"""


@pytest.mark.multiprocess
def test_suite_launcher_local_submits_then_runs_the_notebooks_on_the_finished_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CONTRASTSEG_RUNS")
    write_notebook(tmp_path / "notebooks" / "trains.ipynb", [TRAINS], 'preset = "smoke"\nresults_dir = ""\nseed = 0')
    manifest = tmp_path / "notebooks" / "manifest.yaml"
    manifest.write_text("- notebook: notebooks/trains.ipynb\n")
    out = tmp_path / "out"
    command = ["--manifest", str(manifest), "--out", str(out), "--no-progress", "--launcher", "local"]

    assert main(command) == 0
    printed = capsys.readouterr().out
    run_dir = next((out / "store").iterdir())
    record = read_record(run_dir)
    assert f"{run_dir.name}" in printed and "submitted" in printed and "1 runs: 1 submitted" in printed
    assert not (out / "smoke" / "trains.ipynb").exists()  # no notebook ran yet

    wait_until_ended([run_dir])
    trained_at = (run_dir / LOG_NAME).stat().st_mtime_ns
    assert main(command) == 0
    printed = capsys.readouterr().out
    assert "1 runs: 1 finished" in printed and "running the notebooks" in printed and "1 ok" in printed
    saved = json.loads((out / "smoke" / "trains" / "results.json").read_text())
    assert saved["run"] == run_dir.name
    assert saved["miou"] == pytest.approx(json.loads((run_dir / METRICS_NAME).read_text())["val"]["miou"], abs=1e-3)
    assert (run_dir / LOG_NAME).stat().st_mtime_ns == trained_at  # the notebook read the job's run
    assert read_record(run_dir).job_id == record.job_id and JOB_RECORD_NAME in os.listdir(run_dir)


def test_submitit_comes_with_the_cluster_extra(monkeypatch):
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert any(requirement.startswith("submitit") for requirement in extras["cluster"])
    monkeypatch.setitem(sys.modules, "submitit", None)  # an import of submitit now fails as if it were not installed
    with pytest.raises(ImportError, match=r"needs submitit.*pip install 'contrastseg\[cluster\]'"):
        cluster.import_submitit()


@pytest.mark.multiprocess
def test_the_notebooks_of_gpu_runs_do_not_run_where_the_runs_have_other_keys(fake_slurm, tmp_path, capsys,
                                                                             monkeypatch):
    """On this CPU machine device="auto" names a CPU run; the jobs trained the run as a CUDA run. Executing the
    notebooks here would train every run again on the CPU: the suite says so and stops."""
    monkeypatch.delenv("CONTRASTSEG_RUNS")
    write_notebook(tmp_path / "notebooks" / "trains.ipynb", [TRAINS], 'preset = "smoke"\nresults_dir = ""\nseed = 0')
    manifest = tmp_path / "notebooks" / "manifest.yaml"
    manifest.write_text("- notebook: notebooks/trains.ipynb\n")
    out = tmp_path / "out"
    command = ["--manifest", str(manifest), "--out", str(out), "--no-progress", "--launcher", "slurm",
               "--slurm-time", "60"]
    assert main(command) == 0
    run_dir = next((out / "store").iterdir())
    assert json.loads((run_dir / "cluster_job.json").read_text())["resources"]["gpus_per_node"] == 1
    (run_dir / METRICS_NAME).write_text("{}")  # stands in for the metrics that the GPU job would write
    set_states(fake_slurm, j1001="COMPLETED")
    assert main(command) == 1
    captured = capsys.readouterr()
    assert "1 runs: 1 finished" in captured.out and "run this command on a GPU node" in captured.err
    assert not (out / "smoke" / "trains.ipynb").exists()
