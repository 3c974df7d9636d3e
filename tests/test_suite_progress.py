"""The suite's executed copies carry no progress bars: neither text bars (stderr streams, one per refresh) nor
widgets, whether a bar comes from the library (``progress=show_progress``) or from another package's tqdm."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from contrastseg.nbtools import WIDGET_VIEW_MIME
from contrastseg.suite import QUIET_PARAMETERS, check_parameters, executions, format_failures, load_manifest, run_suite

PROGRESS_BAR = re.compile(r"\|\s*\d+/\d+ \[")  # tqdm's text: " 40%|####      | 12/30 [00:00<00:00, ...]"

BARS = """\
from tqdm import tqdm
from tqdm.std import tqdm as text_bar

for _ in tqdm(range(30), mininterval=0):  # another package's bar: no disable argument
    pass
for _ in text_bar(range(30), mininterval=0, disable=not show_progress):  # a bar that follows the parameter
    pass
"""
TRAINING = """\
from contrastseg import runs
from contrastseg.config import smoke

result = runs.get_or_train(smoke(steps=2, num_train=8, num_val=4, batch_size=4), progress=show_progress)
print("trained", result.config.steps, "steps")
"""


def progress_outputs(executed: Path) -> list[str]:
    """Every output of an executed notebook that shows a progress bar: a stream holding tqdm's text, or a widget."""
    found = []
    for index, cell in enumerate(nbformat.read(executed, as_version=4).cells):
        for output in cell.get("outputs", []):
            if output.output_type == "stream" and PROGRESS_BAR.search(output.text):
                found.append(f"cell {index}, {output.name}: {output.text.strip().splitlines()[-1][:80]}")
            elif WIDGET_VIEW_MIME in output.get("data", {}):
                found.append(f"cell {index}: a widget")
    return found


def bars_notebook(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    parameters = nbformat.v4.new_code_cell('preset = "smoke"\nresults_dir = ""\nshow_progress = True')
    parameters.metadata["tags"] = ["parameters"]
    notebook.cells = [parameters, nbformat.v4.new_code_cell(BARS), nbformat.v4.new_code_cell(TRAINING)]
    path = folder / "bars.ipynb"
    nbformat.write(notebook, path)
    return path


@pytest.mark.multiprocess
def test_the_suites_executed_copies_hold_no_progress_bar(tmp_path):
    import papermill

    notebook = bars_notebook(tmp_path / "notebooks")
    by_hand = tmp_path / "by_hand.ipynb"  # the same notebook outside the suite: its text bars are there
    papermill.execute_notebook(str(notebook), str(by_hand), kernel_name="python3", progress_bar=False,
                               parameters={"preset": "smoke"}, cwd=str(notebook.parent))
    assert len(progress_outputs(by_hand)) >= 2

    manifest = tmp_path / "notebooks" / "manifest.yaml"
    manifest.write_text("- notebook: notebooks/bars.ipynb\n", encoding="utf-8")
    result = run_suite("smoke", manifest, tmp_path / "runs", progress=False)
    assert result.ok, format_failures(result)
    (outcome,) = result.outcomes
    assert outcome.parameters["show_progress"] is False
    executed = Path(outcome.output)
    assert "trained 2 steps" in executed.read_text(encoding="utf-8")
    assert progress_outputs(executed) == []


def test_show_progress_is_off_where_declared_unless_the_manifest_or_set_say_otherwise(tmp_path):
    bars_notebook(tmp_path / "notebooks")
    quiet = nbformat.v4.new_notebook()
    quiet.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    parameters = nbformat.v4.new_code_cell('preset = "smoke"\nresults_dir = ""')
    parameters.metadata["tags"] = ["parameters"]
    quiet.cells = [parameters]
    nbformat.write(quiet, tmp_path / "notebooks" / "no_bars.ipynb")
    manifest = tmp_path / "notebooks" / "manifest.yaml"
    manifest.write_text("- notebook: notebooks/bars.ipynb\n- notebook: notebooks/no_bars.ipynb\n", encoding="utf-8")
    planned = executions(load_manifest(manifest), "smoke")
    assert check_parameters(planned, {}, defaults=QUIET_PARAMETERS) == {"bars": {"show_progress": False},
                                                                        "no_bars": {}}
    assert check_parameters(planned, {"show_progress": True}, defaults=QUIET_PARAMETERS)["bars"] == \
        {"show_progress": True}
    manifest.write_text("- notebook: notebooks/bars.ipynb\n  parameters: {smoke: {show_progress: true}}\n",
                        encoding="utf-8")
    planned = executions(load_manifest(manifest), "smoke")
    assert check_parameters(planned, {}, defaults=QUIET_PARAMETERS) == {"bars": {}}  # the manifest's True stays
