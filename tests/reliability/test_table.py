"""The README's reliability table is the one the cases generate."""

from __future__ import annotations

from tests.reliability.table import all_cases, markdown, readme_block


def test_every_case_has_a_unique_id_and_three_filled_columns():
    ids = [case.id for case in all_cases()]
    assert len(ids) == len(set(ids)) > 30
    assert all(case.given and case.sees and case.kept for case in all_cases())


def test_the_readme_table_is_current():
    assert readme_block() == markdown(), "run: python -m tests.reliability.table --write"
