"""Where the project reads and writes: the data and runs roots, and a context manager for environment variables
that kernels inherit."""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from typing import Iterator

RUNS_ENV = "CONTRASTSEG_RUNS"
DATA_ENV = "CONTRASTSEG_DATA"


REPOSITORY = Path(__file__).resolve().parents[2]
"""The checkout this package is imported from, when it is one (an editable install); see ``runs_root``."""


def runs_root() -> Path:
    """The root of everything this project writes: ``$CONTRASTSEG_RUNS``; else the checkout's ``runs`` folder, so
    that notebooks started in any folder share one store; else (an installed package) ``./runs``, said once."""
    if os.environ.get(RUNS_ENV):
        return Path(os.environ[RUNS_ENV])
    if (REPOSITORY / "pyproject.toml").is_file() and (REPOSITORY / "lib" / "contrastseg").is_dir():
        return REPOSITORY / "runs"
    _say_once(f"contrastseg writes its runs to {Path('runs').resolve()} (set ${RUNS_ENV} to choose the folder)")
    return Path("runs")


_SAID: set[str] = set()


def _say_once(message: str) -> None:
    if message not in _SAID:
        _SAID.add(message)
        warnings.warn(message, stacklevel=3)


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
