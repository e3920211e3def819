"""Runs ``python -m core.embed`` as its own process, without paying the imports each time.

A multiprocessing fork server imports ``core.embed`` (torch, transformers, mteb: seconds of CPU)
once; each run is a fresh process forked from it that applies its environment, redirects
stdout/stderr to files and calls the same ``run_cli(main)`` as ``python -m core.embed``. It has
its own pid, so tests send it SIGINT or SIGKILL as a user's shell would.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import sys
import time
import types
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(["core.embed"])


def drop_file_permission_override() -> None:
    """Make root obey file modes (drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH), as a user's shell would."""
    if os.geteuid() != 0:
        return

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    libc = ctypes.CDLL(None, use_errno=True)
    header, data = Header(0x20080522, 0), (Data * 2)()  # _LINUX_CAPABILITY_VERSION_3
    if libc.capget(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capget failed")
    dac = (1 << 1) | (1 << 2)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
    data[0].effective &= ~dac
    data[0].permitted &= ~dac
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")


def _child(argv: list[str], env: dict[str, str], stdout: str, stderr: str, as_user: bool) -> None:
    os.environ.update(env)
    if as_user:
        drop_file_permission_override()
    out = open(stdout, "w", buffering=1)  # noqa: SIM115 - open for the process's lifetime
    err = open(stderr, "w", buffering=1)  # noqa: SIM115
    os.dup2(out.fileno(), 1)
    os.dup2(err.fileno(), 2)
    sys.stdout, sys.stderr = out, err
    import torch

    from core.embed import main
    from core.errors import run_cli

    # The tiny model's matrices are 32 wide: one thread is many times faster than two fighting over them.
    torch.set_num_threads(1)

    code = run_cli(main, argv)
    out.flush()
    err.flush()
    sys.exit(code)


@dataclass
class Run:
    process: multiprocessing.process.BaseProcess
    stdout_path: Path
    stderr_path: Path

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""

    def wait(self, timeout: float = 180) -> int:
        """The exit code: the CLI's return value, or minus the signal that ended it."""
        self.process.join(timeout)
        if self.process.exitcode is None:
            self.process.kill()
            raise TimeoutError(f"core.embed did not finish in {timeout} s; stderr:\n{self.stderr}")
        return self.process.exitcode

    def wait_for_stderr(self, text: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.stderr:
            if not self.process.is_alive() or time.monotonic() > deadline:
                raise AssertionError(f"never saw {text!r} on stderr; it was:\n{self.stderr}")
            time.sleep(0.05)


def start_embed(
    args: list[str], folder: Path, env: dict[str, str] | None = None, name: str = "run", as_user: bool = False
) -> Run:
    """Start ``python -m core.embed ARGS``; its stdout and stderr go to files in ``folder``.

    ``as_user``: file modes bind even when the tests run as root (read-only folders stay read-only).
    """
    stdout, stderr = folder / f"{name}.stdout", folder / f"{name}.stderr"
    argv = [str(a) for a in args]
    process = _CONTEXT.Process(target=_child, args=(argv, env or {}, str(stdout), str(stderr), as_user), name=name)
    with _no_main_module():
        process.start()
    return Run(process, stdout, stderr)


@contextmanager
def _no_main_module() -> Iterator[None]:
    """A child re-imports the parent's ``__main__`` before it runs; after an AppTest that is a page script,
    which must not run in the child. A bare ``__main__`` (no file, no spec) makes it import nothing."""
    saved = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = saved
