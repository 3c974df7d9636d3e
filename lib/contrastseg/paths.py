"""Where the project reads and writes: the data and runs roots, and a context manager for environment variables
that kernels inherit."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

RUNS_ENV = "CONTRASTSEG_RUNS"
DATA_ENV = "CONTRASTSEG_DATA"


def runs_root() -> Path:
    """The root of everything this project writes: ``$CONTRASTSEG_RUNS`` or ``./runs``."""
    return Path(os.environ.get(RUNS_ENV) or "runs")


def data_root() -> Path:
    """Where relative data set roots live: ``$CONTRASTSEG_DATA`` or ``./data``."""
    return Path(os.environ.get(DATA_ENV) or "data")


def resolve_data_root(root: str) -> str:
    """A config's ``data_root`` as a path: empty stays empty (SynthScapes on the fly), an absolute path stays, and
    a relative one (the paper presets' "cityscapes") is looked up under ``data_root()``."""
    if not root or Path(root).is_absolute():
        return root
    return str(data_root() / root)


@contextlib.contextmanager
def environ(**values: str) -> Iterator[None]:
    """Set environment variables (inherited by notebook kernels started inside), then restore the old values."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
