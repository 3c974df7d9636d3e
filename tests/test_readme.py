"""Every ```python block of the documentation runs as written.

The blocks of ``README.md``, ``notebooks/README.md`` and ``docs/*.md`` are each executed in a fresh Python process
(a fresh namespace, nothing imported beforehand), in a temporary working directory, with ``MPLBACKEND=agg`` and the
run store (``CONTRASTSEG_RUNS``) and data root (``CONTRASTSEG_DATA``) in temporary folders. A block that truly cannot
run on a CPU in seconds is marked by a first line ``# not run: <reason>`` and skipped with that reason. ```bash
blocks are not executed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = ["README.md", "notebooks/README.md",
             *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md"))]
NOT_RUN = re.compile(r"#\s*not run\b:?\s*(.*)", re.IGNORECASE)
TIMEOUT_S = 180  # a hung block fails instead of stalling the suite; blocks are meant to take seconds


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line number of the opening fence, code) of every ```python block."""
    blocks, lines, index = [], text.splitlines(), 0
    while index < len(lines):
        if re.fullmatch(r"\s*```python\s*", lines[index]):
            start, body = index + 1, []
            index += 1
            while index < len(lines) and not re.fullmatch(r"\s*```\s*", lines[index]):
                body.append(lines[index])
                index += 1
            blocks.append((start, "\n".join(body) + "\n"))
        index += 1
    return blocks


BLOCKS = [pytest.param(name, code, id=f"{name}:{line}")
          for name in DOCUMENTS for line, code in python_blocks((ROOT / name).read_text(encoding="utf-8"))]


def test_the_readme_has_python_blocks():
    assert len(python_blocks((ROOT / "README.md").read_text(encoding="utf-8"))) >= 2


def test_block_extraction():
    text = "intro\n```python\nx = 1\n```\n```bash\nls\n```\n```python\n# not run: needs a GPU\ny = 2\n```\n"
    assert python_blocks(text) == [(2, "x = 1\n"), (8, "# not run: needs a GPU\ny = 2\n")]


@pytest.mark.multiprocess
@pytest.mark.parametrize("name, code", BLOCKS)
def test_python_block_runs(name, code, tmp_path):
    first_line = code.lstrip().splitlines()[0] if code.strip() else ""
    mark = NOT_RUN.match(first_line)
    if mark:
        assert mark.group(1).strip(), f"a block of {name} is marked 'not run' without a reason"
        pytest.skip(f"{name}: {mark.group(1).strip()}")
    env = dict(os.environ, MPLBACKEND="agg", CONTRASTSEG_RUNS=str(tmp_path / "runs"),
               CONTRASTSEG_DATA=str(tmp_path / "data"))
    work = tmp_path / "work"
    work.mkdir()
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True,
                            timeout=TIMEOUT_S)
    seconds = time.perf_counter() - started
    assert result.returncode == 0, (f"a python block of {name} fails as written ({seconds:.0f} s):\n{code}\n"
                                    f"--- stderr:\n{result.stderr[-4000:]}")
