"""Where the project keeps what it makes: converted models, prepared data, caches.

Everything lives under one root so a user can move or wipe it in one place.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def cache_root() -> Path:
    """The root for converted models, data and embedding caches.

    ``EMBEDDING_LENS_HOME`` overrides the default ``~/.cache/embedding-lens``.
    """
    root = Path(os.environ.get("EMBEDDING_LENS_HOME", Path.home() / ".cache" / "embedding-lens"))
    root.mkdir(parents=True, exist_ok=True)
    return root
