"""Settings for the whole test run: one temporary run store for all tests, a headless matplotlib, 2 threads
(``CONTRASTSEG_TEST_THREADS`` sets another count).

The run store root is set in the environment before any notebook kernel starts, so nbval's and papermill's kernels
inherit it and share the test run's cached runs instead of training twice.
"""

import os
import tempfile

os.environ.setdefault("MPLBACKEND", "agg")
os.environ["HF_HUB_OFFLINE"] = "1"  # tests never download: timm reads only a local cache
os.environ["CONTRASTSEG_RUNS"] = tempfile.mkdtemp(prefix="contrastseg-test-runs-")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ.get("CONTRASTSEG_TEST_THREADS", "2")))


@pytest.fixture
def runs_root(tmp_path, monkeypatch):
    """A fresh, empty run store for one test."""
    monkeypatch.setenv("CONTRASTSEG_RUNS", str(tmp_path / "runs"))
    return tmp_path / "runs"



@pytest.fixture
def register_objective(monkeypatch):
    """Register a test objective as a method for one test: ``register_objective("name", ObjectiveClass)`` adds a
    method with the fields and flags of ``like`` (default "ce") whose objective is the given class."""
    from contrastseg.config import ExperimentConfig
    from contrastseg.method import Method
    from contrastseg.methods import METHODS

    def register(name: str, objective, like: str = "ce") -> Method:
        base = METHODS[like]
        method = Method(name, base.config, objective, semi_supervised=base.semi_supervised,
                        mask_classification=base.mask_classification)
        monkeypatch.setitem(METHODS, name, method)
        monkeypatch.setitem(ExperimentConfig.methods, name, method)
        return method

    return register
