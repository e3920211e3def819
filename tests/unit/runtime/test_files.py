"""Atomic writes: all or nothing, and files with the mode the user's umask gives."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from core.runtime.files import atomic_write, follow_umask, staging_folder, write_json


@pytest.fixture
def umask():
    def set_mask(mask: int) -> None:
        os.umask(mask)

    old = os.umask(0o022)
    os.umask(old)
    yield set_mask
    os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_written_files_follow_the_umask(tmp_path, umask, mask):
    umask(mask)
    with atomic_write(tmp_path / "a.bin", "wb") as handle:
        handle.write(b"x")
    write_json(tmp_path / "b.json", {"a": 1})
    for name in ("a.bin", "b.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~mask


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(target) as handle:
        handle.write("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_a_staging_folder_is_removed_when_its_block_fails_and_kept_when_it_succeeds(tmp_path):
    with pytest.raises(KeyboardInterrupt), staging_folder(tmp_path, ".out.") as folder:
        (folder / "half").write_text("x")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    with staging_folder(tmp_path, ".out.") as folder:
        (folder / "whole").write_text("x")
    assert folder.name.startswith(".out.") and stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert [p.name for p in folder.iterdir()] == ["whole"]


def test_an_interrupt_right_after_the_temporary_is_created_leaves_nothing(tmp_path, monkeypatch):
    """Ctrl-C can land between the call that creates the temporary entry and the next line."""
    real_open, real_mkdir = os.open, Path.mkdir

    def open_then_interrupt(*args, **kwargs):
        real_open(*args, **kwargs)
        raise KeyboardInterrupt

    def mkdir_then_interrupt(self, *args, **kwargs):
        real_mkdir(self, *args, **kwargs)
        if self.name.startswith(".out."):
            raise KeyboardInterrupt

    monkeypatch.setattr(os, "open", open_then_interrupt)
    with pytest.raises(KeyboardInterrupt), atomic_write(tmp_path / "a.txt") as handle:
        handle.write("never")
    monkeypatch.setattr(os, "open", real_open)
    monkeypatch.setattr(Path, "mkdir", mkdir_then_interrupt)
    with pytest.raises(KeyboardInterrupt), staging_folder(tmp_path, ".out."):
        pass
    assert list(tmp_path.iterdir()) == []


def test_missing_folders_are_created(tmp_path):
    write_json(tmp_path / "new" / "deeper" / "c.json", [1])
    assert (tmp_path / "new" / "deeper" / "c.json").read_text() == "[\n  1\n]\n"


def test_a_full_disk_is_a_storage_error_and_the_old_file_stays(tmp_path, monkeypatch):
    import errno

    from core.runtime.errors import StorageError
    from core.runtime.files import disk_full

    target = tmp_path / "out.json"
    write_json(target, {"old": 1})

    def no_room(_fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_room)
    with pytest.raises(StorageError, match=r"cannot write .*out\.json: No space left on device .*df -h"):
        write_json(target, {"new": 2})
    assert target.read_text() == '{\n  "old": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
    # safetensors reports it in its message only; anything else is no full disk
    assert disk_full(Exception("Error while serializing: No space left on device (os error 28)"), target)
    assert disk_full(OSError(errno.EACCES, "Permission denied"), target) is None
    assert disk_full(ValueError("bad"), target) is None


def test_a_locked_folder_refuses_a_second_process_and_is_free_after(tmp_path):
    from core.runtime.errors import StorageError
    from core.runtime.files import folder_locked, lock_folder

    held = lock_folder(tmp_path, "--out")
    try:
        child = os.fork()
        if child == 0:  # another process: refused, and sees the lock
            try:
                lock_folder(tmp_path, "--out")
            except StorageError as error:
                os._exit(0 if "is in use by another process" in str(error) and folder_locked(tmp_path) else 1)
            os._exit(2)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        os.close(held)
    assert not folder_locked(tmp_path)
    assert list(tmp_path.iterdir()) == []  # no lock file left behind


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_a_built_folder_and_what_libraries_wrote_into_it_follow_the_umask(tmp_path, umask, mask):
    """One rule: safetensors writes 0600 and a staging folder is 0700 while built; kept, they follow the umask."""
    import torch
    from safetensors.torch import save_file

    umask(mask)
    with staging_folder(tmp_path, ".out.") as folder:
        (folder / "sub").mkdir(mode=0o700)
        save_file({"a": torch.zeros(2)}, str(folder / "sub" / "model.safetensors"))
        (folder / "link").symlink_to(folder / "sub")
        follow_umask(folder)
    assert stat.S_IMODE(folder.stat().st_mode) == stat.S_IMODE((folder / "sub").stat().st_mode) == 0o777 & ~mask
    assert stat.S_IMODE((folder / "sub" / "model.safetensors").stat().st_mode) == 0o666 & ~mask
