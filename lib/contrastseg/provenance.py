"""Where a result came from: the git commit of this package's checkout and the versions of the packages that
compute (torch, timm, numpy, ...). A run's ``metrics.json`` records both, and the report's footer shows them."""

from __future__ import annotations

import functools
import hashlib
import platform
import subprocess
from importlib import metadata
from pathlib import Path

COMPUTING_PACKAGES = ("torch", "torchvision", "timm", "numpy", "scipy", "pillow")
"""The packages whose versions can change a run's numbers (kernels, initialisation, data generation)."""

UNKNOWN_COMMIT = "unknown"


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """The short commit of the checkout this package is imported from; when tracked files of the package have
    uncommitted changes, "<commit>-dirty-<8 hex digits of those changes>", so two different uncommitted states never
    read as the same code; ``UNKNOWN_COMMIT`` outside a git checkout (an installed wheel)."""
    package_dir = Path(__file__).parent

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=package_dir, capture_output=True, text=True, timeout=10,
                              check=True).stdout

    try:
        commit = git("rev-parse", "--short", "HEAD").strip()
        changes = git("diff", "HEAD", "--", str(package_dir))
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN_COMMIT
    if not changes:
        return commit
    return f"{commit}-dirty-{hashlib.sha256(changes.encode()).hexdigest()[:8]}"


def package_versions(packages: tuple[str, ...] = COMPUTING_PACKAGES) -> dict[str, str]:
    """``{"python": ..., package: version}`` for the installed ones among ``packages``."""
    versions = {"python": platform.python_version()}
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


def training_provenance() -> dict:
    """What ``metrics.json`` records about the code a run was trained with."""
    return {"commit": git_commit(), "packages": package_versions()}
