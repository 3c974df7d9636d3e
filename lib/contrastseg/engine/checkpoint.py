"""Checkpoints and small files written atomically and durably; checkpoints read back without running any code.

A file is written to a temporary file in its own folder (``.<name>.<pid>.<token>.tmp``, created with the permissions
the umask gives any new file), flushed and fsynced, then renamed over its target, and the folder is fsynced: a reader
sees the old complete file or the new one, and after a crash the new one survives once the call returned. A process
killed while writing leaves its temporary file behind; ``remove_stale_temporaries`` deletes those.

A checkpoint holds tensors and plain values only (dicts, lists, tuples, strings, numbers, booleans, None):
``save_checkpoint`` refuses anything else, and ``load_checkpoint`` reads with ``torch.load(weights_only=True)``, so a
crafted file is refused instead of running its code.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections import OrderedDict
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator

import torch

TEMPORARY_SUFFIX = ".tmp"
PLAIN_SCALARS = (str, int, float, bool, type(None))


def temporary_path(path: Path) -> Path:
    """A fresh temporary name beside ``path``: ``.<name>.<pid>.<random hex>.tmp``."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{TEMPORARY_SUFFIX}")


def fsync_folder(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (a no-op where folders cannot be opened, as on Windows)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def write_atomically(path: str | Path, write: Callable[[BinaryIO], None], previous: str | Path | None = None) -> Path:
    """Create ``path`` from what ``write(stream)`` writes, so that it is always either the old or the new complete
    file; with ``previous``, the old ``path`` (if any) is moved there just before the new one takes its place.

    Between the two renames only ``previous`` exists; a reader that finds no ``path`` falls back to it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(path)
    try:
        handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        if previous is not None and path.exists():
            os.replace(path, previous)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)
    return path


def write_text_atomically(path: str | Path, text: str) -> Path:
    """``write_atomically`` of ``text`` as UTF-8."""
    return write_atomically(path, lambda stream: stream.write(text.encode("utf-8")))


def read_json_mapping(path: str | Path) -> dict:
    """The JSON object stored in ``path`` (a file ``write_text_atomically`` wrote).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not JSON, or holds something other than an object (the message says which).
    """
    value = json.loads(Path(path).read_text(encoding="utf-8", errors="replace"))
    if not isinstance(value, dict):
        raise ValueError(f"it holds a {type(value).__name__}, not a mapping")
    return value


def remove_stale_temporaries(folder: str | Path, names: Iterable[str]) -> list[Path]:
    """Delete the temporary files that writes of ``names`` (file names in ``folder``) left behind when their process
    was killed; returns the deleted paths. Call it only where no other process writes these files at the moment."""
    folder = Path(folder)
    stale = [path for name in names for path in folder.glob(f".{name}.*{TEMPORARY_SUFFIX}") if path.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def plain_value_problem(value, where: str = "state") -> str | None:
    """Where ``value`` holds something other than tensors and plain values (``weights_only`` refuses it), e.g.
    "state['config']['scales'] is a numpy.ndarray"; None when it holds nothing else."""
    if isinstance(value, torch.Tensor) or type(value) in PLAIN_SCALARS or isinstance(value, (torch.dtype,
                                                                                               torch.device)):
        return None
    if type(value) in (dict, OrderedDict):
        for key, item in value.items():
            if type(key) not in PLAIN_SCALARS:
                return f"{where} has a key of type {type(key).__module__}.{type(key).__name__}"
            problem = plain_value_problem(item, f"{where}[{key!r}]")
            if problem:
                return problem
        return None
    if type(value) in (list, tuple, torch.Size):
        for index, item in enumerate(value):
            problem = plain_value_problem(item, f"{where}[{index}]")
            if problem:
                return problem
        return None
    return f"{where} is a {type(value).__module__}.{type(value).__name__}"


def save_checkpoint(state: dict, path: str | Path, previous: str | Path | None = None) -> Path:
    """Write ``state`` with ``torch.save`` atomically (``write_atomically``); with ``previous``, the checkpoint it
    replaces is kept there.

    Raises:
        TypeError: ``state`` holds a value that ``load_checkpoint`` would refuse (neither tensor nor plain value);
            nothing is written.
    """
    problem = plain_value_problem(state)
    if problem:
        raise TypeError(f"checkpoint {path} would not load with weights_only=True: {problem}; store tensors and plain "
                        f"values only")
    return write_atomically(path, lambda stream: torch.save(state, stream), previous)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint with ``weights_only=True``; a truncated, foreign or crafted file raises an error naming it.

    Raises:
        FileNotFoundError: no such file.
        RuntimeError: the file is not a checkpoint, is damaged, or holds objects other than tensors and plain values.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise RuntimeError(f"checkpoint {path} cannot be read ({load_error_reason(error)}): it is damaged, or it "
                           f"holds more than tensors and plain values") from error
    if not isinstance(state, dict):
        raise RuntimeError(f"checkpoint {path} holds a {type(state).__name__}, not a dict of training state")
    return state


def load_error_reason(error: Exception) -> str:
    """``torch.load``'s error on one line: for a refusal by the weights-only unpickler just its reason (e.g.
    "Unsupported global: GLOBAL pathlib.Path.touch"), without the advice around it."""
    text = " ".join(str(error).split())
    refusal = re.search(r"WeightsUnpickler error: (.*?)(?: Check the documentation|$)", text)
    return f"refused by the weights-only unpickler: {refusal.group(1).strip()}" if refusal else text


def floating_tensors(value, name: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """(dotted name, tensor) of every floating-point or complex tensor in nested dicts and lists, depth first."""
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() or value.is_complex():
            yield name, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from floating_tensors(item, f"{name}.{key}" if name else str(key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from floating_tensors(item, f"{name}.{index}" if name else str(index))


def non_finite_tensors(state) -> list[str]:
    """The dotted names of the tensors of ``state`` (nested dicts and lists) holding a NaN or an infinity, in order;
    e.g. ["model.backbone.bn1.running_var"]."""
    named = list(floating_tensors(state))
    flags = torch.stack([torch.isfinite(tensor).all().cpu() for _, tensor in named]) if named else torch.ones(0)
    return [name for (name, _), finite in zip(named, flags.tolist()) if not finite]

