"""The house rules that no single module's tests see: no import cycles, and a light ``core.encoding.encoder``."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from core.runtime.paths import REPO_ROOT

PACKAGES = ("core", "analysis", "pages", "workbench")


def project_modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the project's packages (tests excluded)."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            parts = path.relative_to(REPO_ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def imported_modules(path: Path, name: str, known: set[str]) -> set[str]:
    """Project modules ``path`` imports anywhere in its body: top level, in functions, under ``if``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: climb from the importing module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            # ``from package import module`` imports the submodule itself.
            found.update(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known)
    return {module for module in found if module in known and module != name}


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    known = set(modules)
    return {name: imported_modules(path, name, known) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``[a, b, ..., a]``, or None (depth-first search with colours)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_sees_function_level_imports(tmp_path):
    module = tmp_path / "a.py"
    module.write_text("import b\n\ndef late():\n    from c import thing\n")
    assert imported_modules(module, "a", {"a", "b", "c"}) == {"b", "c"}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_covers_the_project_and_its_known_edges():
    graph = import_graph()
    assert {"core.encoding.encoder", "analysis.attention", "analysis.attention.report", "pages.attention"} <= set(graph)
    assert "analysis.categories" in graph["analysis.attribution.integrated_gradients"]
    assert "analysis.attribution.integrated_gradients" in graph["analysis.attention.report"]
    assert (
        "analysis.attention" not in graph["analysis.attribution.integrated_gradients"]
    )  # the old cycle's edge is gone


def test_no_import_cycle_among_project_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_importing_the_encoder_loads_no_mteb():
    code = "import sys, core.encoding.encoder; print('mteb' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
