"""The in-memory dataset every reader returns, and its canonical hash (the sha256 of its jsonl form)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from core.runtime.paths import cache_root

Split = Literal["test", "train"]
SPLITS: tuple[Split, ...] = ("test", "train")


@dataclass
class Dataset:
    """Texts (and labels, if any) with the SHA-256 of their canonical jsonl form."""

    name: str
    texts: list[str]
    labels: list[str] | None
    sha256: str
    source: str

    def __post_init__(self) -> None:
        if self.labels is not None and len(self.labels) != len(self.texts):
            raise ValueError(f"{self.name}: {len(self.texts)} texts but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.texts)

    def n_labels(self) -> int:
        return len(set(self.labels)) if self.labels is not None else 0


def jsonl_lines(texts: Sequence[str], labels: Sequence[str] | None) -> Iterator[str]:
    """The canonical jsonl lines: ``{"text": ...}`` or ``{"text": ..., "label": ...}``, non-ASCII kept."""
    if labels is None:
        for text in texts:
            yield json.dumps({"text": text}, ensure_ascii=False) + "\n"
    else:
        for text, label in zip(texts, labels, strict=True):
            yield json.dumps({"text": text, "label": label}, ensure_ascii=False) + "\n"


def content_sha256(texts: Sequence[str], labels: Sequence[str] | None) -> str:
    """SHA-256 of the canonical jsonl form: equal to the sha256 of a prepared split's file."""
    digest = hashlib.sha256()
    for line in jsonl_lines(texts, labels):
        digest.update(line.encode("utf-8"))
    return digest.hexdigest()


def default_data_dir() -> Path:
    """Where prepared tasks live: ``<cache root>/data``."""
    return cache_root() / "data"
