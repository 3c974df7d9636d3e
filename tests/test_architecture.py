"""The house rules of the package layout: no import cycles, and a method's folder is reached only through the registry.

Every ``import`` of a ``contrastseg`` module counts, at module level or inside a function (a function-level import
is a cycle all the same, only a later one); imports under ``if TYPE_CHECKING:`` do not run and are left out.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lib" / "contrastseg"
REGISTRY = "contrastseg.methods"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def resolve(name: str) -> str | None:
    """The module that an imported name lives in: ``name`` itself, or the nearest enclosing module."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def is_type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imported_modules(tree: ast.AST) -> set[str]:
    """The contrastseg modules a syntax tree imports (the package uses absolute imports only)."""
    found = set()
    stack = [tree]
    while stack:
        node = stack.pop()
        if is_type_checking_block(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            found.update(resolve(alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert not node.level, f"a relative import: {ast.unparse(node)}"
            base = node.module
            for alias in node.names:
                found.add(resolve(f"{base}.{alias.name}") if f"{base}.{alias.name}" in MODULES else resolve(base))
        stack.extend(ast.iter_child_nodes(node))
    return {name for name in found if name}


GRAPH = {name: imported_modules(ast.parse(path.read_text())) - {name} for name, path in MODULES.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as [a, b, ..., a], or None."""
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state:
                cycle = visit(target, [*path, target])
                if cycle:
                    return cycle
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start, [start])
            if cycle:
                return cycle
    return None


def method_folder(module: str) -> str | None:
    """``contrastseg.methods.<name>`` of a module inside a method's folder, else None."""
    parts = module.split(".")
    return ".".join(parts[:3]) if len(parts) >= 3 and parts[:2] == ["contrastseg", "methods"] else None


def test_the_graph_sees_the_imports_it_should():
    assert "contrastseg.methods" in GRAPH["contrastseg.config"]
    assert "contrastseg.objectives.cross_entropy" in GRAPH["contrastseg.methods.pixel_contrast.objective"]
    assert "contrastseg.engine.semi" not in GRAPH["contrastseg.methods.rc2l.objective"]  # a TYPE_CHECKING import
    assert "contrastseg.engine.semi" in GRAPH["contrastseg.engine.train"]  # a function-level import


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_imports_itself_back_through_others():
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_a_method_folder_is_imported_only_by_the_registry_and_itself():
    wrong = [f"{importer} imports {target}" for importer, targets in GRAPH.items() for target in targets
             if method_folder(target) and importer != REGISTRY and method_folder(importer) != method_folder(target)]
    assert not wrong, wrong


def notebook_imports(path: Path) -> set[str]:
    cells = json.loads(path.read_text())["cells"]
    source = "\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "code")
    # IPython magics and shell lines are not Python: each becomes a "pass" at its indentation
    source = "\n".join(line[:len(line) - len(line.lstrip())] + "pass" if line.lstrip().startswith(("%", "!"))
                       else line for line in source.splitlines())
    return imported_modules(ast.parse(source))


@pytest.mark.parametrize("notebook", sorted((ROOT / "notebooks").rglob("*.ipynb")),
                         ids=lambda path: str(path.relative_to(ROOT / "notebooks")))
def test_a_method_folder_is_imported_only_by_that_methods_notebooks(notebook):
    folder = notebook.relative_to(ROOT / "notebooks").parts[0]
    wrong = [target for target in notebook_imports(notebook)
             if method_folder(target) and method_folder(target) != f"contrastseg.methods.{folder}"]
    assert not wrong, f"{notebook.name} imports {wrong}, another method's folder"


def test_every_method_folder_is_registered():
    from contrastseg.methods import METHODS

    folders = {path.name for path in (PACKAGE / "methods").iterdir() if (path / "__init__.py").exists()}
    registered = {method.objective_class().__module__.split(".")[2] for method in METHODS.values()
                  if method.objective_class().__module__.startswith("contrastseg.methods.")}
    assert registered <= folders
    assert {"pixel_contrast", "contextrast", "rc2l"} <= registered
    assert len(METHODS) == len(folders)  # one registry line per folder
