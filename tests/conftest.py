"""Session-wide test settings: one temporary run store for the whole session, a headless matplotlib, 2 threads
(``CONTRASTSEG_TEST_THREADS`` sets another count).

The run store root is set in the environment before any notebook kernel starts, so nbval's and papermill's kernels
inherit it and share the session's cached runs instead of training twice.
"""

import importlib.util
import os
import tempfile
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "agg")
os.environ["CONTRASTSEG_RUNS"] = tempfile.mkdtemp(prefix="contrastseg-test-runs-")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ.get("CONTRASTSEG_TEST_THREADS", "2")))


@pytest.fixture
def runs_root(tmp_path, monkeypatch):
    """A fresh, empty run store for one test."""
    monkeypatch.setenv("CONTRASTSEG_RUNS", str(tmp_path / "runs"))
    return tmp_path / "runs"


def load_data_script(name: str):
    """A script of data_scripts/ as a module (they are scripts, not a package)."""
    path = Path(__file__).resolve().parents[1] / "data_scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
