"""Atomic file writes (a reader sees the old file or the new one, never half of one), a full disk reported as
:class:`StorageError`, an exclusive lock on a folder for one process at a time, and one rule for file modes.

File modes: every file and folder the project leaves behind has the mode ``open()``/``mkdir()`` give under the
user's umask (0666/0777 minus the umask), whoever wrote it. A folder is private (0700) only while it is built
(:func:`staging_folder`); :func:`follow_umask` gives it and what libraries wrote into it (safetensors writes 0600)
the rule's modes before it is renamed into place.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from core.runtime.errors import StorageError

# errno values of a write the disk refused for lack of room: no space, quota exceeded, file size limit.
DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def disk_full(error: BaseException, path: str | Path, then: str = "run the same command again") -> StorageError | None:
    """The :class:`StorageError` for ``error`` if it is a write refused for lack of room, else None.

    Libraries that do their own I/O (safetensors) report it in their message only, so that is read too.
    ``then`` is what the user does once there is room.
    """
    if isinstance(error, StorageError):
        return None
    if isinstance(error, OSError) and error.errno is not None:
        if error.errno not in DISK_FULL:
            return None
        reason = error.strerror or os.strerror(error.errno)
    else:
        reason = next((os.strerror(code) for code in DISK_FULL if os.strerror(code) in str(error)), None)
        if reason is None:
            return None
    path = Path(path)
    return StorageError(
        f"cannot write {path}: {reason} (the disk or quota of {path.parent} is full). Free some space there "
        f"(df -h {path.parent}) and {then}: what was written before is intact, and nothing half-written was kept."
    )


def temporary_name(parent: Path, prefix: str, suffix: str = "") -> Path:
    """A new name in ``parent`` for a temporary file or folder (64 random bits: never an existing entry).

    The caller knows the name before the entry exists, so its cleanup covers an interrupt that lands right
    after the entry is created (``tempfile.mkstemp``/``mkdtemp`` return the name only after they create it,
    and a Ctrl-C between the two left the entry behind).
    """
    return parent / f"{prefix}{secrets.token_hex(8)}{suffix}"


@contextmanager
def atomic_write(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success, fsync and rename it over ``path``.

    A full disk (or quota, or file size limit) raises :class:`StorageError` naming ``path``; the temporary
    file is removed (also on Ctrl-C) and an existing ``path`` keeps its old content.
    """
    path = Path(path)
    tmp = temporary_name(path.parent, f".{path.name}.", ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as with open()
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        full = disk_full(error, path)
        if full is not None:
            raise full from None
        raise


def current_umask() -> int:
    """The process's umask, read without changing it (``os.umask`` sets it to read it, a race with other threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def follow_umask(path: str | Path) -> None:
    """Give ``path`` (and, for a folder, everything under it) the modes of the one rule: 0666/0777 minus the umask.

    Symbolic links are left alone (their mode is their target's).
    """
    mask = current_umask()
    path = Path(path)
    entries = [path, *path.rglob("*")] if path.is_dir() and not path.is_symlink() else [path]
    for entry in entries:
        if entry.is_symlink():
            continue
        entry.chmod((0o777 if entry.is_dir() else 0o666) & ~mask)


@contextmanager
def staging_folder(parent: str | Path, prefix: str) -> Iterator[Path]:
    """A new private folder ``parent/PREFIX<random>`` to build a result in before renaming it into place.

    If the block raises or is interrupted the folder is removed; on success it is the caller's (renamed away,
    after :func:`follow_umask` gives it the modes every other file has).
    """
    folder = temporary_name(Path(parent), prefix)
    try:
        folder.mkdir(mode=0o700)
        yield folder
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def write_json(path: str | Path, payload: Any) -> None:
    with atomic_write(path) as handle:
        json.dump(payload, handle, indent=2, sort_keys=True, default=str)
        handle.write("\n")


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a finished child of ours that is not reaped yet does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    try:  # a finished child we started stays a zombie until reaped
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True  # not our child: it exists, so it runs


def lock_folder(folder: str | Path, what: str, wait: bool = False) -> int:
    """Hold an exclusive lock on ``folder`` (the directory itself: no lock file is left behind) until the returned
    descriptor is closed; the kernel frees it when the process ends, however it ends. Another process holding it
    is a :class:`StorageError` (or, with ``wait``, waited for); ``what`` names the folder's role in the message,
    e.g. ``"--out"``.
    """
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise StorageError(
            f"{what} {folder} is in use by another process writing into it right now: wait for it to end "
            f"(or stop it), or choose another {what}"
        ) from None
    return descriptor


def folder_locked(folder: str | Path) -> bool:
    """Whether another process holds :func:`lock_folder` on ``folder`` right now."""
    try:
        descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(descriptor)  # closing drops the shared lock taken to test it
    return False
