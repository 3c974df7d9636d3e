"""The repository's text stands on its own: no pointer leaves the repository, and every path it names exists.

* No tracked (or new, not ignored) text file (``.py``, ``.md``, ``.yaml``/``.yml``, ``.cfg``, and the markdown cells of notebooks) points
  to notes kept outside the repository or narrates how the code came about (``FORBIDDEN``). The method notes that
  docstrings and notebooks point to are in ``docs/methods.md``.
* In ``README.md``, ``notebooks/README.md`` and ``docs/*.md``, every relative link and every backquoted path with a
  file suffix names a file of the repository, and an ``#anchor`` into a markdown file names one of its sections.
"""

from __future__ import annotations

import re
import subprocess
import unicodedata
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
THIS_FILE = Path(__file__).resolve()

FORBIDDEN = {
    "a folder outside the repository": re.compile(r"\.\./shared|\bshared/research\b|\bshared/DESIGN\b"),
    "the design notes outside the repository": re.compile(r"\bDESIGN\.md\b"),
    "a research note outside the repository": re.compile(r"\bresearch[ -]notes?\b", re.IGNORECASE),
    "a specification outside the repository": re.compile(r"\bthe spec\b|\bspec [AB]\.\d|\bspec ``", re.IGNORECASE),
    "the history of the work (sessions)": re.compile(r"session", re.IGNORECASE),
    "the history of the work (machines lent)": re.compile(r"\blent to\b", re.IGNORECASE),
}
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".cfg"}
LINKED_DOCUMENTS = ["README.md", "notebooks/README.md", *sorted(p.relative_to(ROOT).as_posix()
                                                                 for p in (ROOT / "docs").glob("*.md"))]

MARKDOWN_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
BACKQUOTED = re.compile(r"`([^`\s]+)`")
PATH_SUFFIXES = (".md", ".py", ".ipynb", ".yaml", ".yml", ".json", ".txt", ".cfg", ".toml", ".png")
# generated at run time, or placeholders: never in the repository
GENERATED_PREFIXES = ("runs/", "data/", "/", "~", ".venv/", "$")


def tracked_files() -> list[Path]:
    """The files git tracks, and the new ones it would track (not ignored), so that a new file is checked too."""
    listing = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, text=True, check=True)
    return [ROOT / name for name in listing.stdout.split("\0") if name]


def text_of(path: Path) -> str:
    """The checked text of a file: a notebook's markdown cells, any other file whole."""
    if path.suffix == ".ipynb":
        notebook = nbformat.read(path, as_version=4)
        return "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "markdown")
    return path.read_text(encoding="utf-8")


def forbidden_mentions(text: str) -> list[tuple[int, str, str]]:
    """(line number, what, line) of every forbidden pointer or narration in ``text``."""
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        for what, pattern in FORBIDDEN.items():
            if pattern.search(line):
                found.append((number, what, line.strip()))
    return found


def test_forbidden_patterns_catch_what_they_are_for():
    caught = ["see ``../shared/research/pixel_contrast.md``", "spec A.4", "(see the spec, Sec. 4.5)",
              "research note part B", "Design notes: DESIGN.md", "an earlier session's machine",
              "no GPU lent to this task"]
    for line in caught:
        assert forbidden_mentions(line), line
    # a paper's own sections, and importlib's module specs, are not pointers
    for line in ["the paper's ablation, Sec. 4.4", "spec = importlib.util.spec_from_file_location(name, path)",
                 "def parse_method(spec: str)", "nb.metadata['kernelspec']", "research code"]:
        assert not forbidden_mentions(line), line


def test_no_tracked_text_points_outside_the_repository():
    problems = []
    for path in tracked_files():
        if path == THIS_FILE or path.suffix not in TEXT_SUFFIXES | {".ipynb"} or not path.is_file():
            continue
        for number, what, line in forbidden_mentions(text_of(path)):
            where = f"{path.relative_to(ROOT)}" + ("" if path.suffix == ".ipynb" else f":{number}")
            problems.append(f"{where}: {what}: {line}")
    assert not problems, "text that points outside the repository or narrates its history:\n" + "\n".join(problems)


def github_anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    kept = "".join(ch for ch in text if ch in " -" or unicodedata.category(ch)[0] in "LMN")
    return kept.replace(" ", "-")


def anchors_of(markdown: Path) -> set[str]:
    """The anchors of a markdown file: its headings' (outside code blocks) and explicit ``<a id="...">`` ones."""
    anchors, seen, in_code = set(), {}, False
    for line in markdown.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
            continue
        if in_code:
            continue
        heading = re.match(r"#{1,6}\s+(.*)", line)
        if heading:
            anchor = github_anchor(heading.group(1))
            count = seen.get(anchor, 0)
            seen[anchor] = count + 1
            anchors.add(anchor if count == 0 else f"{anchor}-{count}")
        anchors.update(re.findall(r"<a\s+id=\"([^\"]+)\"", line))
    return anchors


def named_paths(document: Path) -> list[str]:
    """Relative link targets and backquoted file paths of a markdown document, outside its code blocks."""
    text = re.sub(r"```.*?```", "", document.read_text(encoding="utf-8"), flags=re.DOTALL)
    targets = [t for t in MARKDOWN_LINK.findall(text) if not re.match(r"[a-z]+:", t)]
    for token in BACKQUOTED.findall(text):
        path = token.split("#")[0]
        if "/" in path and path.endswith(PATH_SUFFIXES) and not path.startswith(GENERATED_PREFIXES):
            targets.append(token)
    return targets


def resolve(target: str, document: Path) -> Path | None:
    """The repository file a path names: relative to the document, the repository root, or ``lib/`` (for
    ``contrastseg/...``); None when there is none."""
    for base in (document.parent, ROOT, ROOT / "lib"):
        candidate = (base / target).resolve()
        if candidate.exists() and ROOT in candidate.parents:
            return candidate
    return None


@pytest.mark.parametrize("name", LINKED_DOCUMENTS)
def test_every_path_and_link_of_the_documents_exists(name):
    document = ROOT / name
    problems = []
    for target in named_paths(document):
        path, _, anchor = target.partition("#")
        found = resolve(path, document) if path else document
        if found is None:
            problems.append(f"{target}: no such file")
        elif anchor and found.suffix == ".md" and anchor not in anchors_of(found):
            problems.append(f"{target}: no section with anchor #{anchor} in {found.relative_to(ROOT)}")
    assert not problems, f"{name} names what does not exist:\n" + "\n".join(problems)


def test_the_methods_document_exists_with_its_sections():
    anchors = anchors_of(ROOT / "docs" / "methods.md")
    for anchor in ["cross-entropy-baseline", "pixel-contrast", "memory", "contextrast", "bane", "rc2l",
                   "mask-classification-baseline"]:
        assert anchor in anchors, anchor
