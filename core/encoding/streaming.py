"""Corpora beyond memory: read texts in chunks, embed each chunk into a shard, assemble the ``.npy`` at the end.

- Input (``.txt`` lines, ``.csv``/``.tsv``, ``.jsonl``, ``.parquet``; ``.json`` is one document, read whole) comes
  through ``core.data.user_files.iter_texts``, the readers and messages of ``load_user_file``, a batch at a time.
- Each chunk's vectors go to ``chunk-NNNNNN.npy`` in :func:`shard_folder` (under the cache root) with a JSON record
  of the run key (every setting that changes a vector, the chunk size), the chunk's text digest and the shard's
  SHA-256. A rerun keeps a shard only if all of these match, so a killed run resumes where it stopped, and a shard
  from another model, adapter, prompt, pooling, precision or input (or a corrupt one) is redone, never mixed in.
- Under ``torchrun --nproc_per_node=N`` chunk ``i`` belongs to rank ``i % N``; rank 0 waits for all ranks
  and assembles the shards in input order into the output, written atomically (a memory-mapped temporary
  file renamed into place), then removes the shards. The ranks share the cache root (one machine, or a
  shared ``EMBEDDING_LENS_HOME``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from core.data.user_files import iter_texts
from core.data.wheels import file_sha256
from core.encoding.cache import settings_key
from core.encoding.encoder import Encoder
from core.runtime.distributed import barrier, dist_info
from core.runtime.errors import ConfigError, DataError, StorageError
from core.runtime.files import atomic_write, disk_full, write_json
from core.runtime.paths import cache_root

logger = logging.getLogger(__name__)

DEFAULT_CHUNK_TEXTS = 2048
SHARD_VERSION = 1


# ----- reading in chunks


def iter_text_chunks(
    path: str | Path, text_column: str = "text", chunk_size: int = DEFAULT_CHUNK_TEXTS
) -> Iterator[list[str]]:
    """Lists of at most ``chunk_size`` non-empty texts, in file order; at most one chunk (plus the reader's
    batch) in memory. The texts and every problem with the file come from ``core.data.user_files.iter_texts``."""
    if chunk_size < 1:
        raise ConfigError(f"--chunk-size {chunk_size} must be at least 1 text.")
    chunk: list[str] = []
    for text in iter_texts(path, text_column):
        chunk.append(text)
        if len(chunk) == chunk_size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# ----- shards


def texts_digest(texts: list[str]) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(hashlib.sha256(text.encode()).digest())
    return digest.hexdigest()


def shard_folder(output: str | Path) -> Path:
    """Where the shards of ``output`` wait until assembled: under the cache root, keyed by the output's absolute
    path, so the output's folder holds nothing but finished files (a killed run leaves no stray file there)."""
    key = hashlib.sha256(str(Path(output).resolve()).encode()).hexdigest()[:24]
    return cache_root() / "embed-shards" / key


@dataclass(frozen=True)
class ShardStore:
    """The shards of one output: ``chunk-NNNNNN.{npy,json}`` in ``folder``, valid only for ``run_key``.

    With ``hold_when_full``, a shard the disk has no room for is held in memory instead (this run finishes; a
    kill then loses those chunks, which a rerun redoes), so a full cache disk does not stop a one-process run.
    """

    folder: Path
    run_key: str
    hold_when_full: bool = False
    held: dict[int, tuple[np.ndarray, int]] = field(default_factory=dict)

    def paths(self, index: int) -> tuple[Path, Path]:
        stem = self.folder / f"chunk-{index:06d}"
        return stem.with_suffix(".npy"), stem.with_suffix(".json")

    def record(self, index: int) -> dict | None:
        """The shard's record if the shard is complete and belongs to this run, else ``None``."""
        if index in self.held:
            vectors_held, truncated = self.held[index]
            return {"rows": int(vectors_held.shape[0]), "truncated": truncated}
        vectors, meta = self.paths(index)
        if not (vectors.is_file() and meta.is_file()):
            return None
        try:
            record = json.loads(meta.read_text())
        except (OSError, ValueError):
            return None
        if (
            record.get("version") != SHARD_VERSION
            or record.get("run_key") != self.run_key
            or record.get("index") != index
        ):
            return None
        return record

    def valid(self, index: int, digest: str, check_bytes: bool = False) -> bool:
        record = self.record(index)
        if record is None or record.get("texts_sha256") != digest:
            return False
        return not check_bytes or file_sha256(self.paths(index)[0]) == record.get("npy_sha256")

    def write(self, index: int, digest: str, vectors: np.ndarray, truncated: int) -> None:
        """Vectors first, record last: a shard without its record (a kill in between) is redone."""
        try:
            self._write(index, digest, vectors, truncated)
        except StorageError as error:
            if not self.hold_when_full:
                raise
            if not self.held:
                logger.warning("%s Until then this run keeps its vectors in memory and cannot resume.", error)
            self.held[index] = (np.ascontiguousarray(vectors, dtype=np.float32), truncated)

    def _write(self, index: int, digest: str, vectors: np.ndarray, truncated: int) -> None:
        path, meta = self.paths(index)
        meta.unlink(missing_ok=True)
        with atomic_write(path, "wb") as handle:
            np.save(handle, np.ascontiguousarray(vectors, dtype=np.float32))
        write_json(
            meta,
            {
                "version": SHARD_VERSION,
                "run_key": self.run_key,
                "index": index,
                "texts_sha256": digest,
                "rows": int(vectors.shape[0]),
                "truncated": truncated,
                "npy_sha256": file_sha256(path),
            },
        )

    def load(self, index: int) -> np.ndarray:
        """A shard's vectors after checking its bytes against its record (a corrupt shard is a DataError)."""
        if index in self.held:
            return self.held[index][0]
        path, _meta = self.paths(index)
        record = self.record(index)
        if record is None or file_sha256(path) != record["npy_sha256"]:
            raise DataError(f"shard {path} is missing or corrupt; rerun the same command to redo it.")
        vectors = np.load(path, allow_pickle=False)
        if vectors.shape[0] != record["rows"]:
            raise DataError(
                f"shard {path} has {vectors.shape[0]} rows, its record says {record['rows']}; rerun to redo it."
            )
        return vectors


@dataclass
class StreamResult:
    chunks: int
    computed_chunks: int  # by this process, in this run
    truncated: int  # texts cut to max_length, over all chunks (rank 0)
    seconds: float
    shape: tuple[int, int] | None  # the assembled output's shape (rank 0), None on other ranks


def embed_stream(
    encoder: Encoder,
    input_path: str | Path,
    output: str | Path,
    *,
    text_column: str = "text",
    chunk_size: int = DEFAULT_CHUNK_TEXTS,
    normalize: bool = False,
    use_adapter: bool | None = None,
    show_progress: bool = False,
) -> StreamResult:
    """Embed ``input_path`` chunk by chunk into ``output`` (``.npy``), resuming from valid shards.

    Under torchrun each rank embeds its chunks; rank 0 assembles. Memory is bounded by one chunk.
    """
    started = time.perf_counter()
    output = Path(output)
    rank, world = dist_info()
    use_adapter = encoder.use_adapter if use_adapter is None else use_adapter
    settings = encoder.settings(encoder.prompt, encoder.plan().poolings[0], use_adapter)
    run_key = settings_key({**settings, "normalize": normalize, "chunk_size": chunk_size, "shards": SHARD_VERSION})
    store = ShardStore(shard_folder(output), run_key, hold_when_full=world == 1)
    lock = lock_output(output) if rank == 0 else None  # rank 0 speaks for the run; its ranks share the shards
    try:
        return _embed_stream(encoder, input_path, output, store, text_column, chunk_size, normalize, use_adapter,
                             show_progress, started)  # fmt: skip
    finally:
        if lock is not None:
            os.close(lock)


def lock_output(output: str | Path) -> int:
    """Hold an exclusive lock on ``output`` until the returned descriptor is closed (the kernel frees it however
    the process ends); another run writing the same output is a :class:`StorageError` naming it.

    The lock file lives beside the shard folder under the cache root (the output's folder gets no stray file), and
    outlives the shard folder, which the run removes when it assembles the output.
    """
    path = shard_folder(output).with_name(shard_folder(output).name + ".lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as error:
        raise StorageError(
            f"cannot write under the cache root {cache_root()} ({error.strerror or error}): core.embed keeps its "
            "finished chunks there until the output is whole. Make it writable, or set EMBEDDING_LENS_HOME to a "
            "writable folder."
        ) from None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise StorageError(
            f"--output {output} is being written by another core.embed run right now: wait for it to end "
            "(or stop it), or choose another --output."
        ) from None
    return descriptor


def _embed_stream(
    encoder: Encoder,
    input_path: str | Path,
    output: Path,
    store: ShardStore,
    text_column: str,
    chunk_size: int,
    normalize: bool,
    use_adapter: bool,
    show_progress: bool,
    started: float,
) -> StreamResult:
    rank, world = dist_info()
    # First pass: which of this rank's chunks are missing (reads the input once more, one chunk at a time); a bad
    # input fails here, before anything is written.
    digests: list[str] = []
    todo: list[int] = []
    todo_texts = 0
    for index, chunk in enumerate(iter_text_chunks(input_path, text_column, chunk_size)):
        digests.append(texts_digest(chunk))
        if index % world == rank and not store.valid(index, digests[-1], check_bytes=True):
            todo.append(index)
            todo_texts += len(chunk)
    store.folder.mkdir(parents=True, exist_ok=True)
    mine = len(range(rank, len(digests), world))
    if len(todo) < mine:
        logger.info("rank %d resumes: %d of its %d chunks already embedded", rank, mine - len(todo), mine)

    bar = tqdm(
        total=todo_texts,
        unit="text",
        desc=f"embedding (rank {rank})" if world > 1 else "embedding",
        disable=not show_progress or rank != 0,
        smoothing=0.1,
    )
    todo_set = set(todo)
    for index, chunk in enumerate(iter_text_chunks(input_path, text_column, chunk_size)):
        if index not in todo_set:
            continue
        vectors = encoder.encode(chunk, normalize=normalize, use_adapter=use_adapter)
        store.write(index, digests[index], vectors, encoder.last_truncated)
        bar.update(len(chunk))
    bar.close()
    barrier()

    shape = None
    truncated = 0
    if rank == 0:
        shape, truncated = assemble(store, len(digests), output, encoder.dim)
    barrier()
    return StreamResult(
        chunks=len(digests),
        computed_chunks=len(todo),
        truncated=truncated,
        seconds=time.perf_counter() - started,
        shape=shape,
    )


def assemble(store: ShardStore, chunks: int, output: Path, dim: int) -> tuple[tuple[int, int], int]:
    """Copy the shards in order into ``output`` through a memory-mapped temporary file renamed into place;
    then remove the shards. Returns the shape and the number of truncated texts."""
    records = [store.record(index) for index in range(chunks)]
    missing = [index for index, record in enumerate(records) if record is None]
    if missing:
        raise DataError(f"{len(missing)} shard(s) missing (e.g. chunk {missing[0]}); rerun the same command.")
    rows = sum(int(record["rows"]) for record in records)  # type: ignore[index]
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    try:
        matrix = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(rows, dim))
        offset = 0
        for index in range(chunks):
            vectors = store.load(index)
            matrix[offset : offset + len(vectors)] = vectors
            offset += len(vectors)
        matrix.flush()
        del matrix
        with tmp.open("rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, output)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        full = disk_full(error, output, "the shards are kept: run the same command again")
        if full is not None:
            raise full from None
        raise
    shutil.rmtree(store.folder, ignore_errors=True)
    return (rows, dim), sum(int(record["truncated"]) for record in records)  # type: ignore[index]
