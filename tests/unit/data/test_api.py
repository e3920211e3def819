"""The package's public API: every ``from core.data import ...`` in the repository still resolves."""

from __future__ import annotations

import ast

import core.data
from core.runtime.paths import REPO_ROOT


def test_every_name_imported_from_core_data_exists():
    imported: dict[str, set[str]] = {}
    for folder in ("core", "analysis", "pages", "workbench", "tests"):
        for path in (REPO_ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and node.module == "core.data":
                    for alias in node.names:
                        imported.setdefault(alias.name, set()).add(str(path.relative_to(REPO_ROOT)))
    assert {"load_task", "Dataset", "resolve_dataset", "DataError"} <= set(imported)  # the scan found them
    missing = {name: sorted(paths) for name, paths in imported.items() if not hasattr(core.data, name)}
    assert not missing
    assert set(core.data.__all__) <= set(dir(core.data))
