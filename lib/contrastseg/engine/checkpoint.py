"""Checkpoints written atomically: a temporary file in the same folder, then an atomic rename."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch


def save_checkpoint(state: dict, path: str | Path) -> Path:
    """Write ``state`` with ``torch.save`` so that ``path`` is always either the old or the new complete file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(state, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint; a truncated or foreign file raises an error that names it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:
        raise RuntimeError(f"checkpoint {path} could not be read ({error}); "
                           f"delete it to start the run afresh") from error
