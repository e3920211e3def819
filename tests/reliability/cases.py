"""A reliability case: one row of the README's table, input -> what the user sees -> what is kept.

Each test in this folder is parametrized by the cases it checks (``@cases(...)``), so the table is
generated from the same objects the tests assert against: ``python -m tests.reliability.table``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

REGISTRY: list[Case] = []


@dataclass(frozen=True)
class Case:
    id: str
    given: str  # what the user does or has
    sees: str  # what the user sees
    kept: str  # what is on disk afterwards
    area: str = "input"
    data: Mapping[str, Any] = field(default_factory=dict)  # what the test needs to build the case


def cases(*rows: Case):
    """Parametrize a test over ``rows`` (as ``case``) and register them for the table."""
    REGISTRY.extend(rows)
    return pytest.mark.parametrize("case", rows, ids=[row.id for row in rows])
