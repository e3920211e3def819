"""The reliability table in docs/reliability.md is the one the cases generate."""

from __future__ import annotations

from tests.reliability.table import all_cases, docs_block, markdown


def test_every_case_has_a_unique_id_and_three_filled_columns():
    ids = [case.id for case in all_cases()]
    assert len(ids) == len(set(ids)) > 30
    assert all(case.given and case.sees and case.kept for case in all_cases())


def test_the_docs_table_is_current():
    assert docs_block() == markdown(), "run: python -m tests.reliability.table --write"
