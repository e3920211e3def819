"""Per-text records: appended to ``records.jsonl`` under the config's hash, read back to resume a killed run.

One record per text and setting (``base``, ``adapter``): its curves and AOPCs per method, the seconds each
method took on it, and integrated gradients' convergence where it ran.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from analysis.faithfulness.perturbation import ContentText
from core.runtime.files import disk_full

__all__ = ["Measured", "Pending", "append_records", "read_records", "speed_from_records"]


@dataclass
class Measured:
    """Per-text records of each setting (``base``, ``adapter``); ``computed``: texts measured in this process."""

    records: dict[str, list[dict[str, Any]]]
    computed: int = 0
    # One plain pass over the sample (every setting), timed in the same run: the report's time in units of it
    # is a ratio that carries across machines of different speeds.
    sample_encode_seconds: float = 0.0
    sample_encode_cpu_seconds: float = 0.0
    sample_token_passes: int = 0  # tokens the decoder ran for that pass


@dataclass(frozen=True)
class Pending:
    """A text to measure, with its original vector and its partner's, per setting label."""

    key: str
    text: ContentText
    original: dict[str, np.ndarray]
    partner: dict[str, np.ndarray]


def read_records(path: Path, digest: str) -> dict[tuple[str, str], dict[str, Any]]:
    """Records of earlier runs with the same config hash; a line cut short by a kill is ignored."""
    done: dict[tuple[str, str], dict[str, Any]] = {}
    if not path.is_file():
        return done
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("config") == digest:
            done[(record["key"], record["side"])] = record
    return done


def append_records(path: Path, records: Sequence[dict[str, Any]]) -> None:
    """Append one line per record; a line a kill cut short is ended first, so it spoils no record after it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+b") as handle:
        size = handle.seek(0, os.SEEK_END)
        cut_short = size > 0 and handle.seek(size - 1) >= 0 and handle.read(1) != b"\n"
        lines = "".join(json.dumps(record) + "\n" for record in records)
        try:
            handle.write((("\n" if cut_short else "") + lines).encode())
            handle.flush()
        except OSError as error:
            full = disk_full(error, path)
            if full is None:
                raise
            raise full from None


def speed_from_records(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Texts/s per method from the records' own timings (scoring in every setting + perturbed texts encoded for
    all settings), over every text, including those an earlier, resumed run measured."""
    texts: Counter[str] = Counter()
    seconds: Counter[str] = Counter()
    for record in records:
        for method, value in record.get("seconds", {}).items():
            texts[method] += 1
            seconds[method] += value
    return {
        "texts_measured_per_method": dict(texts),
        "seconds_per_method": {m: round(v, 1) for m, v in seconds.items()},
        "texts_per_second": {m: round(texts[m] / v, 2) for m, v in seconds.items() if v > 0},
    }
