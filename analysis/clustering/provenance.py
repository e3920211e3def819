"""What made a cell: package versions and the repository's commit (and whether the tree had changes)."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata as importlib_metadata
from typing import Any

from core.runtime.paths import REPO_ROOT


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in ("torch", "transformers", "mteb", "scikit-learn", "numpy", "peft", "sentence-transformers"):
        try:
            versions[package] = importlib_metadata.version(package)
        except importlib_metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def git_state() -> dict[str, Any]:
    """HEAD and whether the tree has changes; ``None``s where there is no git or no repository."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=False
        )
        status = subprocess.run(
            ["git", "status", "--porcelain"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    if head.returncode != 0:
        return {"commit": None, "dirty": None}
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip()) if status.returncode == 0 else None}
