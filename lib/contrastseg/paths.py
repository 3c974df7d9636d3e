"""Where the project writes: the runs root, and a context manager for environment variables that kernels inherit."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

RUNS_ENV = "CONTRASTSEG_RUNS"


def runs_root() -> Path:
    """The root of everything this project writes: ``$CONTRASTSEG_RUNS`` or ``./runs``."""
    return Path(os.environ.get(RUNS_ENV) or "runs")


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
