"""``NAME=VALUE`` overrides on the command line (``--set``), shared by ``python -m contrastseg.train`` and
``python -m contrastseg.suite``.

A small module of its own, so that the training CLI reads its overrides without importing the notebook batch.
"""

from __future__ import annotations

from typing import Any, Sequence


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["steps=200", "seeds=[0, 1]"]`` -> ``{"steps": 200, "seeds": [0, 1]}`` (values parsed as YAML).

    Raises:
        ValueError: an item is not ``NAME=VALUE`` with NAME an identifier, or its value is not valid YAML.
    """
    import yaml

    overrides = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name.strip().isidentifier():
            raise ValueError(f"--set wants NAME=VALUE with NAME a parameter name, got {item!r}")
        try:
            overrides[name.strip()] = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"--set {item!r}: the value is not valid YAML ({exc})") from exc
    return overrides
