"""The scripts of data_scripts/ as modules (they are scripts, not a package), for the tests that call them.

Importing this module puts ``data_scripts/`` first on ``sys.path``, as running ``python data_scripts/<name>.py``
does, so the scripts find their helper module ``data_scripts/download.py`` as ``download``, and a test can import
it the same way (``from download import extract``). Each script and the helper module are imported once, under their
file names, so a script and a test share one ``download`` module (the same exception classes).

Kept out of conftest.py: notebooks/ has a conftest.py of its own, and ``from conftest import ...`` would find
whichever of the two was imported first.
"""

import importlib
import sys
from pathlib import Path

DATA_SCRIPTS = Path(__file__).resolve().parents[1] / "data_scripts"

if str(DATA_SCRIPTS) not in sys.path:
    sys.path.insert(0, str(DATA_SCRIPTS))


def load_data_script(name: str):
    """``data_scripts/<name>.py`` imported as the module ``name`` (the same module object on every call)."""
    module = importlib.import_module(name)
    if Path(module.__file__).resolve() != DATA_SCRIPTS / f"{name}.py":
        raise ImportError(f"module {name!r} comes from {module.__file__}, not from {DATA_SCRIPTS}")
    return module
