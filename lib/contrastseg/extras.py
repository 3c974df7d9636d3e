"""Packages of the ``notebooks`` extra, imported where they are used.

``pip install contrastseg`` installs what training, evaluation and the run store need; the notebooks, the papermill
suite, its report, openTSNE's t-SNE maps and the seaborn figures need the extra as well
(``pip install 'contrastseg[notebooks]'``, which ``make setup`` installs). The library imports those packages inside
the functions that use them, through ``import_notebooks_package``, so that importing any core module works without
them, and a call that needs one names the command that installs it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

NOTEBOOKS_INSTALL = "pip install 'contrastseg[notebooks]'"
NOTEBOOKS_PACKAGES = ("papermill", "jupyterlab", "ipywidgets", "seaborn", "openTSNE", "nbformat", "ipykernel",
                      "nbclient", "nbconvert", "IPython", "jupytext")
"""The modules that come with the notebooks extra (import names), none of them imported by the core modules."""


def import_notebooks_package(module: str, needed_for: str) -> ModuleType:
    """``importlib.import_module(module)`` for a module of the notebooks extra, e.g. ``"seaborn"`` or
    ``"papermill.exceptions"``.

    Args:
        module: the module's import name.
        needed_for: what needs it, for the error message (e.g. ``"plot_per_class_iou"``).

    Raises:
        ImportError: the module's package is not installed; the message names it, what needs it and
            ``NOTEBOOKS_INSTALL``. A package that is installed but fails to import raises its own error unchanged.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        missing = error.name or ""
        if not missing or not (module == missing or module.startswith(missing + ".")):
            raise  # the package is there; one of its own dependencies is missing
        package = module.split(".")[0]
        raise ImportError(f"{needed_for} needs {package}, one of the packages of contrastseg's notebooks extra, "
                          f"which is not installed: {NOTEBOOKS_INSTALL}", name=package) from error
