"""On-disk embedding cache keyed by everything that changes a vector.

SQLite gives atomic, concurrent-safe writes. Each entry stores its vector's SHA-256, so a
corrupt entry is detected on read and reported as a miss (then recomputed and overwritten),
never returned. Vectors are raw float32 bytes: nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from core.paths import cache_root


def settings_key(settings: Mapping[str, object]) -> str:
    """A stable digest of the settings that determine a vector (everything but the text)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


class EmbeddingCache:
    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else cache_root() / "embeddings.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=60, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, dim INTEGER, vec BLOB, sha256 TEXT)"
        )
        self.corrupt_entries = 0

    @staticmethod
    def entry_key(settings: str, text: str) -> str:
        return hashlib.sha256(f"{settings}\0{text}".encode()).hexdigest()

    def get_many(self, settings: str, texts: Sequence[str]) -> dict[int, np.ndarray]:
        """Vectors found for ``texts`` by position; corrupt entries are left out and counted."""
        keys = [self.entry_key(settings, text) for text in texts]
        found: dict[str, tuple[int, bytes, str]] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            rows = self._db.execute(
                f"SELECT key, dim, vec, sha256 FROM vectors WHERE key IN ({','.join('?' * len(chunk))})", chunk
            )
            found.update({key: (dim, vec, digest) for key, dim, vec, digest in rows})
        result = {}
        for position, key in enumerate(keys):
            if key not in found:
                continue
            dim, blob, digest = found[key]
            if len(blob) != 4 * dim or hashlib.sha256(blob).hexdigest() != digest:
                self.corrupt_entries += 1
                continue
            result[position] = np.frombuffer(blob, dtype=np.float32).copy()
        return result

    def put_many(self, settings: str, texts: Sequence[str], vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        rows = []
        for text, vector in zip(texts, vectors, strict=True):
            blob = vector.tobytes()
            rows.append((self.entry_key(settings, text), vector.shape[0], blob, hashlib.sha256(blob).hexdigest()))
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?, ?)", rows)

    def close(self) -> None:
        self._db.close()
