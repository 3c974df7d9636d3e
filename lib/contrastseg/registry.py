"""Flat name -> object registries with errors that list the valid names."""

from __future__ import annotations

from typing import Mapping, TypeVar

T = TypeVar("T")


def lookup(table: Mapping[str, T], name: str, kind: str) -> T:
    """Return ``table[name]``, or raise a ValueError that names ``kind`` and lists the valid names.

    Args:
        table: the registry, a flat dict.
        name: the requested entry.
        kind: what the table holds, for the message ("backbone", "data set", ...).
    """
    try:
        return table[name]
    except KeyError:
        valid = ", ".join(sorted(table))
        raise ValueError(f"unknown {kind} {name!r}; valid names: {valid}") from None
