"""On-disk embedding cache keyed by everything that changes a vector.

SQLite (WAL mode, a busy timeout) gives atomic writes that several processes can share. Each entry
stores its vector's SHA-256, so a corrupt entry is detected on read and reported as a miss (then
recomputed and overwritten), never returned. Vectors are raw float32 bytes: nothing is unpickled.

The cache never fails an embedding. A damaged file (not a database, malformed pages, truncated, a
directory in its place) is moved aside to ``<name>.corrupt-<timestamp>`` and a fresh cache started;
a cache another process keeps locked past the timeout, or one that cannot be written, is switched
off for this process. Each case logs a warning that names the path.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np

from core.runtime.paths import cache_root

log = logging.getLogger(__name__)
T = TypeVar("T")

# Seconds to wait for another process's lock before going on without the cache.
# EMBEDDING_LENS_CACHE_TIMEOUT overrides it (the reliability tests use a short one).
DEFAULT_BUSY_TIMEOUT = 30.0
_DAMAGED = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}
_BUSY = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}
FULL_BELOW_BYTES = 1 << 20  # less room than this on the cache's disk: a failed write is the full disk's


def settings_key(settings: Mapping[str, object]) -> str:
    """A stable digest of the settings that determine a vector (everything but the text)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def busy_timeout() -> float:
    return float(os.environ.get("EMBEDDING_LENS_CACHE_TIMEOUT", DEFAULT_BUSY_TIMEOUT))


def _primary_code(error: sqlite3.Error) -> int | None:
    code = getattr(error, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF


class EmbeddingCache:
    def __init__(self, path: str | Path | None = None, timeout: float | None = None):
        self.path = Path(path) if path is not None else cache_root() / "embeddings.sqlite"
        self.timeout = busy_timeout() if timeout is None else timeout
        self.corrupt_entries = 0
        self.set_aside: list[Path] = []  # damaged files moved out of the way, oldest first
        self._db: sqlite3.Connection | None = None
        self._connect()

    @property
    def enabled(self) -> bool:
        """False once the cache was switched off for this process (locked, unwritable)."""
        return self._db is not None

    # ----- opening, and what to do when the file is damaged or busy
    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and not self.path.is_file():
            raise sqlite3.DatabaseError(f"{self.path} is not a file")
        db = sqlite3.connect(self.path, timeout=self.timeout, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, dim INTEGER, vec BLOB, sha256 TEXT)")
            db.execute("SELECT key, dim, vec, sha256 FROM vectors LIMIT 1").fetchall()
        except BaseException:
            db.close()
            raise
        self._db = db

    def _connect(self) -> None:
        """Open the cache; a damaged file is set aside and a fresh one opened, any other fault disables it."""
        try:
            self._open()
        except (sqlite3.Error, OSError) as error:
            if not self._is_damaged(error) or not self._set_aside(error):
                self._disable(error)
                return
            try:
                self._open()
            except (sqlite3.Error, OSError) as again:
                self._disable(again)

    def _guard(self, action: Callable[[], T], fallback: T) -> T:
        """Run a database action; on a damaged file rebuild and retry once, on any other fault go on uncached."""
        if self._db is None:
            return fallback
        try:
            return action()
        except sqlite3.Error as error:
            if not self._is_damaged(error) or not self._set_aside(error):
                self._disable(error)
                return fallback
        self._connect()
        if self._db is None:
            return fallback
        try:
            return action()
        except sqlite3.Error as again:
            self._disable(again)
            return fallback

    @staticmethod
    def _is_damaged(error: Exception) -> bool:
        if not isinstance(error, sqlite3.Error):
            return False
        code = _primary_code(error)
        return code in _DAMAGED or (code is None and not isinstance(error, sqlite3.OperationalError))

    def _set_aside(self, error: Exception) -> bool:
        """Move the damaged file (and its journal) to ``<name>.corrupt-<timestamp>``; False if it cannot be moved."""
        self.close()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        counter = 1
        while target.exists():
            counter += 1
            target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{counter}")
        try:
            os.replace(self.path, target)
            for suffix in ("-wal", "-shm"):  # the journal belongs to the damaged file, not the fresh one
                side = self.path.with_name(self.path.name + suffix)
                if side.exists():
                    os.replace(side, target.with_name(target.name + suffix))
        except OSError as move_error:
            log.warning(
                "The embedding cache %s is damaged (%s) and cannot be moved aside: %s", self.path, error, move_error
            )
            return False
        self.set_aside.append(target)
        log.warning(
            "The embedding cache %s is damaged (%s): moved it to %s and started a fresh cache; "
            "delete the moved file once you no longer need it.",
            self.path,
            error,
            target,
        )
        return True

    def _disable(self, error: Exception) -> None:
        self.close()
        if isinstance(error, sqlite3.Error) and _primary_code(error) in _BUSY:
            reason = f"is locked by another process (waited {self.timeout:g} s)"
        elif self._disk_full(error):  # sqlite says SQLITE_FULL, or a plain I/O error when its journal cannot grow
            reason = (
                f"cannot be written: the disk of {self.path.parent} is full ({error}). Free some space there to cache "
                "again; vectors cached before are kept"
            )
        else:
            reason = f"cannot be used ({error})"
        log.warning("The embedding cache %s %s: embedding without the cache in this process.", self.path, reason)

    def _disk_full(self, error: Exception) -> bool:
        if isinstance(error, sqlite3.Error) and _primary_code(error) == sqlite3.SQLITE_FULL:
            return True
        try:
            return shutil.disk_usage(self.path.parent).free < FULL_BELOW_BYTES
        except OSError:
            return False

    # ----- entries
    @staticmethod
    def entry_key(settings: str, text: str) -> str:
        return hashlib.sha256(f"{settings}\0{text}".encode()).hexdigest()

    def get_many(self, settings: str, texts: Sequence[str]) -> dict[int, np.ndarray]:
        """Vectors found for ``texts`` by position; corrupt entries are left out and counted."""
        keys = [self.entry_key(settings, text) for text in texts]
        found = self._guard(lambda: self._select(keys), {})
        result = {}
        corrupt = 0
        for position, key in enumerate(keys):
            if key not in found:
                continue
            dim, blob, digest = found[key]
            if not isinstance(blob, bytes) or len(blob) != 4 * dim or hashlib.sha256(blob).hexdigest() != digest:
                corrupt += 1
                continue
            result[position] = np.frombuffer(blob, dtype=np.float32).copy()
        if corrupt:
            self.corrupt_entries += corrupt
            log.warning("%d corrupt entries in the embedding cache %s: recomputing them.", corrupt, self.path)
        return result

    def _select(self, keys: list[str]) -> dict[str, tuple[int, bytes, str]]:
        assert self._db is not None
        found: dict[str, tuple[int, bytes, str]] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            rows = self._db.execute(
                f"SELECT key, dim, vec, sha256 FROM vectors WHERE key IN ({','.join('?' * len(chunk))})", chunk
            )
            found.update({key: (dim, vec, digest) for key, dim, vec, digest in rows})
        return found

    def put_many(self, settings: str, texts: Sequence[str], vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        rows = []
        for text, vector in zip(texts, vectors, strict=True):
            blob = vector.tobytes()
            rows.append((self.entry_key(settings, text), vector.shape[0], blob, hashlib.sha256(blob).hexdigest()))
        self._guard(lambda: self._insert(rows), None)

    def _insert(self, rows: list[tuple[str, int, bytes, str]]) -> None:
        assert self._db is not None
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?, ?)", rows)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
