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
from contrastseg.engine.distributed import TORCHRUN_VARIABLES


def read_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """The config of a JSON or YAML file, with ``field=value`` overrides; errors name the file and the field."""
    from contrastseg.suite import parse_overrides

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
    from contrastseg.engine.train import train

    run_dir = args.run_dir or runs.run_dir_for(cfg)
    under_torchrun = all(name in os.environ for name in TORCHRUN_VARIABLES)
    if under_torchrun:
        if int(os.environ["RANK"]) == 0:
            run_dir.mkdir(parents=True, exist_ok=True)
            runs.write_config(cfg, run_dir)
        metrics = train(cfg, run_dir, progress=not args.no_progress)
    elif args.run_dir is None:  # the store's way in: its lock, its finished-run check, config.json and key
        metrics = runs.get_or_train(cfg, progress=not args.no_progress).metrics
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        runs.write_config(cfg, run_dir)
        metrics = runs.train_in(cfg, run_dir, progress=not args.no_progress)
    if not under_torchrun or int(os.environ["RANK"]) == 0:
        val = metrics["val"]
        print(json.dumps({"run_dir": str(run_dir), "miou": val["miou"], "pixel_accuracy": val["pixel_accuracy"],
                          "steps": metrics["steps"], "train_seconds": round(metrics["train_seconds"], 1),
                          "num_devices": metrics.get("num_devices", 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
