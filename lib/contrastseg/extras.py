"""Packages of the optional extras (``notebooks``, ``cluster``), imported where they are used.

``pip install contrastseg`` installs what training, evaluation and the run store need; the notebooks, the papermill
suite, its report, openTSNE's t-SNE maps and the seaborn figures need the extra as well
(``pip install 'contrastseg[notebooks]'``, which ``make setup`` installs). The library imports those packages inside
the functions that use them, through ``import_notebooks_package``, so that importing any core module works without
them, and a call that needs one names the command that installs it. The ``cluster`` extra (submitit, for
``contrastseg.cluster``) is imported the same way, through ``import_extra_package``.
"""

from __future__ import annotations

import importlib
from types import ModuleType



def install_command(extra: str) -> str:
    """The command that installs the library with the optional dependencies ``extra``, e.g. "notebooks"."""
    return f"pip install 'contrastseg[{extra}]'"


NOTEBOOKS_INSTALL = install_command("notebooks")
NOTEBOOKS_PACKAGES = ("papermill", "jupyterlab", "ipywidgets", "seaborn", "openTSNE", "nbformat", "ipykernel",
                      "nbclient", "nbconvert", "IPython", "jupytext")
"""The modules that come with the notebooks extra (import names), none of them imported by the core modules."""


def import_extra_package(module: str, needed_for: str, extra: str) -> ModuleType:
    """``importlib.import_module(module)`` for a module of the optional dependencies ``extra``.

    Args:
        module: the module's import name, e.g. ``"seaborn"`` or ``"papermill.exceptions"``.
        needed_for: what needs it, for the error message (e.g. ``"plot_per_class_iou"``).
        extra: the extra that brings its package (``"notebooks"``, ``"cluster"``).

    Raises:
        ImportError: the module's package is not installed; the message names it, what needs it and the install
            command (``install_command``). A package that is installed but fails to import raises its own error
            unchanged.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        missing = error.name or ""
        if not missing or not (module == missing or module.startswith(missing + ".")):
            raise  # the package is there; one of its own dependencies is missing
        package = module.split(".")[0]
        raise ImportError(f"{needed_for} needs {package}, one of the packages of contrastseg's {extra} extra, "
                          f"which is not installed: {install_command(extra)}", name=package) from error


def import_notebooks_package(module: str, needed_for: str) -> ModuleType:
    """``import_extra_package`` of a module of the notebooks extra, e.g. ``"seaborn"`` or ``"papermill.exceptions"``
    (the message names ``NOTEBOOKS_INSTALL``)."""
    return import_extra_package(module, needed_for, "notebooks")
