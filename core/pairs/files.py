"""Pair files on disk: JSONL (``anchor``/``positive``, optional ``negative``) or a two-column TSV.

Below every pair module (building, quality, the track guard, training), so each reads and writes pairs the
same way without importing the others.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.runtime.errors import PairFileError
from core.runtime.files import atomic_write


def read_pairs(path: str | Path) -> list[dict[str, Any]]:
    """Pairs from a JSONL file (``anchor``/``positive`` keys) or a two-column TSV; errors name the line."""
    path = Path(path)
    if not path.is_file():
        raise PairFileError(f"no such pair file: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PairFileError(f"{path} is not UTF-8 (offset {exc.start})") from None
    pairs: list[dict[str, Any]] = []
    tsv = path.suffix.lower() in (".tsv", ".txt")
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if tsv:
            cells = line.split("\t")
            if len(cells) != 2:
                raise PairFileError(f"{path}, line {lineno}: expected 2 tab-separated columns, found {len(cells)}")
            row: Any = {"anchor": cells[0], "positive": cells[1]}
        else:
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise PairFileError(f"{path}, line {lineno}: not valid JSON ({exc})") from None
        if not isinstance(row, dict):
            raise PairFileError(f"{path}, line {lineno}: expected a JSON object with 'anchor' and 'positive'")
        for key in ("anchor", "positive"):
            value = row.get(key)
            if not isinstance(value, str) or not value.strip():
                raise PairFileError(f"{path}, line {lineno}: {key!r} is missing, not a string, or empty")
        negative = row.get("negative")
        if negative is not None and (not isinstance(negative, str) or not negative.strip()):
            raise PairFileError(f"{path}, line {lineno}: 'negative' is optional but, if given, a non-empty string")
        pairs.append(row)
    if not pairs:
        raise PairFileError(f"{path} has no pairs (it is empty)")
    return pairs


def write_pairs(path: str | Path, pairs: Sequence[dict[str, Any]]) -> None:
    with atomic_write(path) as handle:
        for pair in pairs:
            handle.write(json.dumps(pair, ensure_ascii=False) + "\n")


def report_path(out: str | Path) -> Path:
    """Where the pair-quality report of a pair file is written: ``pairs.jsonl`` -> ``pairs.report.json``."""
    out = Path(out)
    return out.with_name(out.name.rsplit(".", 1)[0] + ".report.json")
