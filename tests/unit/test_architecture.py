"""The house rules that no single module's tests see: no import cycles, and a light ``core.encoding.encoder``."""

from __future__ import annotations

import ast
import re
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


# ----- each subpackage imports only what its docstring allows

MAY_IMPORT = re.compile(r"May import:(.*?)(?:\n\s*\n|\Z)", re.S)


def subpackages() -> dict[str, Path]:
    """``core.encoding``, ``analysis.clustering``, ...: the packages one level below the top-level ones."""
    return {
        f"{package}.{init.parent.name}": init
        for package in ("core", "analysis")
        for init in sorted((REPO_ROOT / package).glob("*/__init__.py"))
    }


def allowed_imports(init: Path) -> list[str] | None:
    """The dotted prefixes an ``__init__`` docstring's "May import:" line names; None when it has none."""
    doc = ast.get_docstring(ast.parse(init.read_text())) or ""
    match = MAY_IMPORT.search(doc)
    if match is None:
        return None
    return re.findall(r"``([\w.]+)``", match.group(1))


def owner(module: str, packages: set[str]) -> str | None:
    parts = module.split(".")
    name = ".".join(parts[:2])
    return name if name in packages else None


def test_allowed_imports_reads_the_docstring(tmp_path):
    init = tmp_path / "__init__.py"
    init.write_text('"""Owns x.\n\nMay import: ``core.runtime``, ``core.models`` (why).\n"""\n')
    assert allowed_imports(init) == ["core.runtime", "core.models"]
    init.write_text('"""Owns x."""\n')
    assert allowed_imports(init) is None


def test_every_subpackage_says_what_it_may_import():
    missing = [name for name, init in subpackages().items() if allowed_imports(init) is None]
    assert not missing, "no 'May import:' line in the __init__ docstring of: " + ", ".join(missing)


def test_each_subpackage_imports_only_what_its_docstring_allows():
    packages = subpackages()
    rules = {name: allowed_imports(init) or [] for name, init in packages.items()}
    breaches = []
    for module, targets in import_graph().items():
        home = owner(module, set(packages))
        if home is None:
            continue
        for target in sorted(targets):
            if target in PACKAGES or owner(target, set(packages)) == home:
                continue  # a root package's lazy door, or its own subpackage
            if not any(target == allowed or target.startswith(allowed + ".") for allowed in rules[home]):
                breaches.append(f"{module} imports {target} (allowed: {', '.join(rules[home]) or 'nothing'})")
    assert not breaches, "\n".join(breaches)


def test_the_layers_point_down():
    """core's packages never import analysis, pages or workbench; analysis never imports pages or workbench.
    (core.bench, the benchmarks, also times analysis paths, so it may.)"""
    breaches = [
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        for target in targets
        if (module.startswith("core.") and not module.startswith("core.bench") and target.split(".")[0] != "core")
        or (module.startswith("analysis") and target.split(".")[0] in ("pages", "workbench"))
    ]
    assert not breaches, "\n".join(breaches)
