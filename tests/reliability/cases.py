"""A reliability case: one row of the README's table, input -> what the user sees -> what is kept.

Each test in this folder is parametrized by the cases it checks (``@cases(...)``), so the table is
generated from the same objects the tests assert against (read from the marks,
module by module in file order): ``python -m tests.reliability.table``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest


@dataclass(frozen=True)
class Case:
    id: str
    given: str  # what the user does or has
    sees: str  # what the user sees
    kept: str  # what is on disk afterwards
    area: str = "input"
    data: Mapping[str, Any] = field(default_factory=dict)  # what the test needs to build the case


def cases(*rows: Case):
    """Parametrize a test over ``rows`` (as ``case``): the table reads them back from the mark."""
    return pytest.mark.parametrize("case", rows, ids=[row.id for row in rows])
