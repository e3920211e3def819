"""core.data.sources: the parsers of the files inside the wheels (Orange .tab, TREC labels, pythonbible)."""

from __future__ import annotations

import pytest

from core.data.sources import clean_verse, parse_orange_tab, parse_pythonbible, parse_trec
from core.runtime.errors import DataError


def test_parse_orange_tab_drops_empty_rows_and_skips_header(fakes):
    raw = fakes.tab(fakes.ORANGE_ROWS["reuters-r52-train"]).encode()
    texts, labels, stats = parse_orange_tab(raw)
    assert texts == ["net income", "bullion"]
    assert labels == ["earn", "gold"]
    assert stats["dropped_empty"] == 1 and stats["rows"] == 3


def test_parse_orange_tab_rejects_unknown_columns():
    with pytest.raises(DataError, match="Text and Category"):
        parse_orange_tab(b"Label\tBody\nd\tstring\nclass\t\nx\ty\n")


def test_parse_trec_dedups_and_takes_majority_label(fakes):
    questions, labels, stats = parse_trec("\n".join(fakes.TREC_LINES).encode())
    assert len(questions) == len(set(questions)) == 10
    assert stats["duplicate_lines"] == 3 and stats["lines"] == 13
    by_q = dict(zip(questions, labels, strict=True))
    assert by_q["What is the chromosome number of an elephant ?"] == "NUM:count"
    assert stats["label_conflicts"][0]["labels"] == {"NUM:count": 2, "NUM:other": 1}
    assert "Which city is a sister city of Los Angeles ?" in by_q


def test_parse_trec_falls_back_to_latin1():
    questions, labels, stats = parse_trec("LOC:city Where is Malm\xe9 ?\n".encode("latin-1"))
    assert questions == ["Where is Malm\xe9 ?"] and labels == ["LOC:city"]
    assert stats["encoding"] == "latin-1"


def test_parse_pythonbible_reads_verses_without_running_the_module():
    # Running this module would exit; a verse with a start but no end (3) is left out.
    content = '""" 1. In the beginning. 2. Next."""'
    module = f"import sys\nsys.exit(1)\nbible = Bible(V, {content}, {{1: 0, 2: 21, 3: 30}}, {{1: 21, 2: 30}})\n"
    assert parse_pythonbible(module.encode()) == {1: " 1. In the beginning.", 2: " 2. Next."}
    with pytest.raises(DataError, match=r"no Bible\(\.\.\.\) call"):
        parse_pythonbible(b"bible = None\n")


def test_clean_verse():
    raw = " 12. Kiss the son.    Blessed are all.      Psalm 3  A Psalm by David."
    assert clean_verse(raw, "web") == "Kiss the son. Blessed are all."
    assert clean_verse(" 8. I will observe your statutes.    Don`t forsake me.  BEIT", "web") == (
        "I will observe your statutes. Don't forsake me."
    )
    assert clean_verse("2. darkness [was] upon the king\u2019s face", "kjv") == "darkness was upon the king's face"
