"""Packaging: ``pip install contrastseg`` gives the library without the notebook stack.

The core modules import none of the packages of the ``notebooks`` extra (checked in a fresh interpreter, so that
nothing the test process imported counts), pyproject's core dependencies name none of them, and a function that
needs one of them, called without it, says which command installs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from contrastseg.extras import NOTEBOOKS_INSTALL, NOTEBOOKS_PACKAGES

ROOT = Path(__file__).resolve().parents[1]
CORE_MODULES = ("contrastseg", "contrastseg.config", "contrastseg.engine.train", "contrastseg.runs",
                "contrastseg.models", "contrastseg.objectives")
NOTEBOOK_ONLY = ("papermill", "jupyterlab", "ipywidgets", "seaborn", "openTSNE", "nbformat")
"""Packages that must stay out of the core dependencies and out of ``sys.modules`` after importing the library."""


LOADED_SCRIPT = """
import importlib, json, pkgutil, sys
loaded = {}
for module in sys.argv[1:]:
    importlib.import_module(module)
loaded["core"] = sorted({name.split(".")[0] for name in sys.modules})
import contrastseg
for info in pkgutil.walk_packages(contrastseg.__path__, "contrastseg."):
    importlib.import_module(info.name)
loaded["every module"] = sorted({name.split(".")[0] for name in sys.modules})
print(json.dumps(loaded))
"""


@pytest.fixture(scope="module")
def loaded_modules() -> dict[str, set[str]]:
    """The top-level names in ``sys.modules`` of a fresh interpreter: after importing ``CORE_MODULES`` ("core"),
    then after importing every module of the package ("every module")."""
    result = subprocess.run([sys.executable, "-c", LOADED_SCRIPT, *CORE_MODULES], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "MPLBACKEND": "agg"})
    assert result.returncode == 0, result.stderr[-4000:]
    return {stage: set(names) for stage, names in json.loads(result.stdout.strip().splitlines()[-1]).items()}


def test_the_notebook_only_packages_are_those_of_the_extra():
    assert set(NOTEBOOK_ONLY) <= set(NOTEBOOKS_PACKAGES)


def test_the_core_modules_import_no_notebook_package(loaded_modules):
    loaded = loaded_modules["core"]
    assert "contrastseg" in loaded and "torch" in loaded
    assert sorted(loaded & set(NOTEBOOKS_PACKAGES)) == []


def test_no_module_of_the_library_imports_a_notebook_package_at_import_time(loaded_modules):
    loaded = loaded_modules["every module"]
    assert "matplotlib" in loaded and "pandas" in loaded
    assert sorted(loaded & set(NOTEBOOKS_PACKAGES)) == []


def requirement_name(requirement: str) -> str:
    """The distribution name of a PEP 508 requirement, lower case: ``"openTSNE>=1.0"`` -> ``"opentsne"``."""
    name = requirement.strip()
    for stop in "<>=!~;[ (":
        name = name.split(stop)[0]
    return name.lower()


def test_the_core_dependencies_name_no_notebook_package_and_the_extra_names_them_all():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    core = {requirement_name(requirement) for requirement in project["dependencies"]}
    notebooks = {requirement_name(requirement) for requirement in project["optional-dependencies"]["notebooks"]}
    forbidden = {name.lower() for name in NOTEBOOK_ONLY} | {"ipykernel"}
    assert core & forbidden == set()
    assert forbidden <= notebooks
    assert {"torch", "torchvision", "timm", "numpy", "scipy", "pillow", "pyyaml", "filelock", "tqdm"} <= core


def test_make_setup_installs_the_notebooks_extra():
    assert '-c constraints.txt -e ".[dev,notebooks]"' in (ROOT / "Makefile").read_text(encoding="utf-8")


def test_a_figure_without_seaborn_names_the_extra(monkeypatch):
    from contrastseg import viz

    monkeypatch.setitem(sys.modules, "seaborn", None)  # an import of seaborn now fails as if it were not installed
    with pytest.raises(ImportError, match=r"plot_per_class_iou needs seaborn.*pip install 'contrastseg\[notebooks\]'"):
        viz.plot_per_class_iou({"ce": [0.5, 0.4]}, ["road", "sky"])
    assert NOTEBOOKS_INSTALL == "pip install 'contrastseg[notebooks]'"


def test_a_missing_dependency_of_an_installed_package_keeps_its_own_error(monkeypatch):
    from contrastseg.extras import import_notebooks_package

    def broken_import(name):
        raise ModuleNotFoundError("No module named 'a_dependency'", name="a_dependency")

    monkeypatch.setattr("importlib.import_module", broken_import)
    with pytest.raises(ModuleNotFoundError, match="a_dependency"):
        import_notebooks_package("seaborn", "plot_per_class_iou")


INSTALLED_LIBRARY_SCRIPT = """
import json, sys
import contrastseg, torch
from contrastseg import runs
from contrastseg.config import smoke
result = runs.get_or_train(smoke(steps=2, num_train=8, num_val=4), progress=False)
print(json.dumps({"contrastseg": contrastseg.__file__, "torch": torch.__file__, "miou": result.metrics["val"]["miou"]}))
"""


@pytest.mark.multiprocess
def test_pip_install_beside_another_projects_torch_keeps_that_torch_and_trains(tmp_path):
    """``pip install .`` (not editable) into a fresh environment that already has torch and torchvision (here: this
    test's environment, reached through a ``.pth`` file, standing for another project's) installs the library
    without touching that torch, and the installed copy trains a run. Offline: the wheel is built from a copy of the
    sources and installed with ``--no-index``, so every dependency must already be satisfied."""
    import sysconfig
    import shutil

    source = tmp_path / "source"
    shutil.copytree(ROOT / "lib", source / "lib", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    built = subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(tmp_path / "wheel"),
                            str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    new_site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   capture_output=True, text=True, check=True).stdout.strip())
    (new_site / "other_project.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = subprocess.run([*pip, "--python", str(python), "install", "--no-index",
                                *map(str, (tmp_path / "wheel").glob("contrastseg-*.whl"))],
                               capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    assert not (new_site / "torch").exists() and not (new_site / "torchvision").exists()
    trained = subprocess.run([python, "-c", INSTALLED_LIBRARY_SCRIPT], capture_output=True, text=True, timeout=600,
                             cwd=tmp_path, env={**os.environ, "CONTRASTSEG_RUNS": str(tmp_path / "runs"),
                                                "PYTHONPATH": "", "MPLBACKEND": "agg"})
    assert trained.returncode == 0, trained.stderr[-3000:]
    report = json.loads(trained.stdout.strip().splitlines()[-1])
    assert report["contrastseg"].startswith(str(new_site))
    assert report["torch"].startswith(sysconfig.get_paths()["purelib"])
    assert 0.0 <= report["miou"] <= 1.0
