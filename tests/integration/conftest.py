"""Integration tests use the real cache root: packaged models and data are prepared there once."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="module", autouse=True)
def user_cache_root() -> Iterator[str]:
    isolated, user_home = os.environ["EMBEDDING_LENS_HOME"], os.environ["EMBEDDING_LENS_USER_HOME"]
    os.environ["EMBEDDING_LENS_HOME"] = user_home
    yield user_home
    os.environ["EMBEDDING_LENS_HOME"] = isolated
