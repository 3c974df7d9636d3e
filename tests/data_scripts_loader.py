"""The scripts of data_scripts/ as modules (they are scripts, not a package), for the tests that call them.

Kept out of conftest.py: notebooks/ has a conftest.py of its own, and ``from conftest import ...`` would find
whichever of the two was imported first.
"""

import importlib.util
from pathlib import Path


def load_data_script(name: str):
    """``data_scripts/<name>.py`` imported as a module named ``name``."""
    path = Path(__file__).resolve().parents[1] / "data_scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
