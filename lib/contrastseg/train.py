"""Train one run from a config file, on one device or data-parallel under torchrun.

    python -m contrastseg.train --config run.json                       # one process
    torchrun --nproc-per-node 4 -m contrastseg.train --config run.json  # 4 GPUs (num_devices must say 4)
    torchrun --nnodes 2 --node-rank 0 --nproc-per-node 8 --rdzv-endpoint HOST:29500 -m contrastseg.train \\
        --config run.json                                                # 2 nodes of 8 GPUs (num_devices 16)

The config file is JSON or YAML: a mapping of ``ExperimentConfig`` fields, optionally with ``preset`` naming the
base ("smoke", "demo" or "paper:<setting>") that the other fields override; ``--set field=value`` overrides on top.
A run's ``config.json`` in the run store is such a file. Without ``--run-dir`` the run goes to the run store folder
of its config (``contrastseg.runs``), so a notebook finds it afterwards. Started without torchrun, a config with
``num_devices`` > 1 starts torchrun itself (``--standalone``, one machine).

Every invocation trains through ``runs.get_or_train``, the one way into training, with or without ``--run-dir`` and
under torchrun or not: the run folder's lock (a second invocation for the same folder waits, then finds the run
finished), the finished-run check (a finished run is not trained again) and ``config.json``. Under torchrun process 0
does these and prints the result. ``runs.get_or_train`` itself starts this CLI as a subprocess for the runs it trains
side by side or under torchrun. ``--set`` is read by ``contrastseg.overrides``; the notebook batch
(``contrastseg.suite``) is not imported.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Sequence

import yaml

from contrastseg.config import ExperimentConfig, preset
from contrastseg.overrides import parse_overrides


def read_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """The config of a JSON or YAML file, with ``field=value`` overrides; errors name the file and the field."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        values = yaml.safe_load(path.read_text())  # YAML is a superset of JSON
    except yaml.YAMLError as error:
        raise ValueError(f"config file {path} is neither JSON nor YAML: {error}") from error
    if not isinstance(values, dict):
        raise ValueError(f"config file {path} must hold a mapping of config fields, not {type(values).__name__}")
    base = values.pop("preset", None)
    values |= parse_overrides(list(overrides))
    try:
        return preset(base, **values) if base else ExperimentConfig.from_dict(values)
    except (TypeError, ValueError) as error:
        raise ValueError(f"config file {path}: {error}") from error


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, metavar="FILE", help="JSON or YAML file of config fields")
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="config overrides")
    parser.add_argument("--run-dir", type=Path, help="output folder (default: the run store's folder)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    cfg = read_config(args.config, args.set)

    from contrastseg import runs
    from contrastseg.engine.distributed import leave_process_group

    result = runs.get_or_train(cfg, run_dir=args.run_dir, progress=not args.no_progress)
    leave_process_group()  # every process of a torchrun has its result; none exits while another still talks
    if not runs.under_torchrun() or int(os.environ["RANK"]) == 0:
        metrics, val = result.metrics, result.metrics["val"]
        print(json.dumps({"run_dir": str(result.run_dir), "miou": val["miou"],
                          "pixel_accuracy": val["pixel_accuracy"],
                          "steps": metrics["steps"], "train_seconds": round(metrics["train_seconds"], 1),
                          "num_devices": metrics.get("num_devices", 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
