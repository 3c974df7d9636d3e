"""``python -m contrastseg.suite`` from an installed package (``pip install .``, no notebooks beside it), in a folder
without notebooks, fails with an error that says the notebooks are not part of the package and what to do."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import contrastseg

PACKAGE = Path(contrastseg.__file__).resolve().parent


@pytest.mark.multiprocess
def test_the_suite_of_an_installed_package_says_where_the_notebooks_are(tmp_path):
    site = tmp_path / "site-packages"  # the package alone, as a non-editable install leaves it
    shutil.copytree(PACKAGE, site / "contrastseg", ignore=shutil.ignore_patterns("__pycache__"))
    empty = tmp_path / "work"
    empty.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "MPLBACKEND": "agg"}
    done = subprocess.run([sys.executable, "-m", "contrastseg.suite", "--no-progress", "--out", str(tmp_path / "out")],
                          cwd=empty, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "notebooks are not part of the installed package" in done.stderr
    assert "clone of the repository" in done.stderr and "--manifest PATH" in done.stderr
    assert str(empty) in done.stderr and str(site / "contrastseg") in done.stderr

    done = subprocess.run([sys.executable, "-m", "contrastseg.suite", "--manifest", "elsewhere.yaml"],
                          cwd=empty, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "manifest not found: elsewhere.yaml" in done.stderr
