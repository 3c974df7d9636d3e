"""The notebooks' nbval settings: a finished cell's outputs are awaited as long as the cell itself may run."""

import importlib.util
from pathlib import Path
from types import SimpleNamespace

NOTEBOOKS_CONFTEST = Path(__file__).resolve().parents[1] / "notebooks" / "conftest.py"


def load_notebooks_conftest():
    spec = importlib.util.spec_from_file_location("notebooks_conftest", NOTEBOOKS_CONFTEST)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_output_wait_is_shorter_than_the_cell_timeout():
    conftest = load_notebooks_conftest()
    for cell_timeout in (60, 2000, 7200):
        config = SimpleNamespace(option=SimpleNamespace(nbval_cell_timeout=cell_timeout))
        cell = SimpleNamespace(config=config, output_timeout=5)
        conftest.pytest_runtest_setup(cell)
        assert cell.output_timeout == cell_timeout


def test_other_test_items_are_left_alone():
    conftest = load_notebooks_conftest()
    item = SimpleNamespace(config=None)
    conftest.pytest_runtest_setup(item)
    assert not hasattr(item, "output_timeout")
