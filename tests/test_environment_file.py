"""conda users get the environment of ``make setup``: ``environment.yml``'s pip section installs the same extras under
``constraints.txt`` (the versions the committed notebook outputs were computed with)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def pip_section() -> list[str]:
    """The lines of environment.yml's pip section, as conda writes them to a requirements file."""
    dependencies = yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf-8"))["dependencies"]
    (section,) = [entry["pip"] for entry in dependencies if isinstance(entry, dict) and "pip" in entry]
    return section


def extras(requirement: str) -> set[str]:
    """The extras of an editable install line: ``-e .[dev,notebooks]`` -> {"dev", "notebooks"}."""
    match = re.search(r"\.\[([^\]]+)\]", requirement)
    assert match, f"no extras in {requirement!r}"
    return {name.strip() for name in match.group(1).split(",")}


def test_the_pip_section_applies_the_constraints_and_the_extras_of_make_setup():
    section = pip_section()
    assert "-c constraints.txt" in section and (ROOT / "constraints.txt").is_file()
    (install,) = [line for line in section if line.startswith("-e ")]
    (setup_line,) = [line for line in (ROOT / "Makefile").read_text(encoding="utf-8").splitlines()
                     if "pip install" in line and "-c constraints.txt" in line]
    assert extras(install) == extras(setup_line) == {"dev", "notebooks"}


def test_pip_finds_the_constraints_beside_the_requirements_file_that_conda_writes(tmp_path, monkeypatch):
    """conda writes the pip section to a temporary requirements file in environment.yml's folder; pip joins a -c
    path with that file's folder, whatever its working directory."""
    from pip._internal.req.req_file import parse_requirements

    checkout = tmp_path / "checkout"
    checkout.mkdir()
    shutil.copy(ROOT / "constraints.txt", checkout / "constraints.txt")
    requirements = checkout / "condaenv.requirements.txt"
    requirements.write_text("\n".join(pip_section()) + "\n", encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    parsed = list(parse_requirements(str(requirements), None))  # pip's HTTP client (None): used for URLs only
    constraints = {line.requirement for line in parsed if line.constraint}
    pinned = {line.split("#")[0].strip() for line in (ROOT / "constraints.txt").read_text().splitlines()
              if line.split("#")[0].strip()}
    assert constraints == pinned and any(pin.startswith("torch==") for pin in constraints)
    assert [line.requirement for line in parsed if not line.constraint] == [".[dev,notebooks]"]
