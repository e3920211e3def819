"""Runs a CLI (``python -m core.embed``, ``analysis.clustering``, ...) as its own process, without paying the imports
each time.

A multiprocessing fork server imports the CLIs (torch, transformers, mteb: seconds of CPU) once; each run is a
fresh process forked from it that applies its environment, redirects stdout/stderr to files and calls the same
``run_cli(main)`` as ``python -m MODULE``. It has its own pid, so tests send it SIGINT or SIGKILL as a user's
shell would.
"""

from __future__ import annotations

import ctypes
import importlib
import multiprocessing
import os
import sys
import time
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

_CONTEXT = multiprocessing.get_context("forkserver")
# The CLIs the cases run (a module's ``main`` is what ``python -m MODULE`` runs through ``run_cli``).
CLI_MODULES = {
    "core.embed": "core.embed",
    "core.models": "core.models.cli",
    "core.export": "core.export.folder",
    "analysis.clustering": "analysis.clustering.__main__",
    "analysis.attention": "analysis.attention.report",
    "analysis.faithfulness": "analysis.faithfulness.__main__",
}
_CONTEXT.set_forkserver_preload(list(CLI_MODULES.values()))


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


def _child(
    module: str,
    argv: list[str],
    env: dict[str, str],
    stdout: str,
    stderr: str,
    as_user: bool,
    setup: Callable[[], None] | None,
) -> None:
    os.environ.update(env)
    if as_user:
        drop_file_permission_override()
    out = open(stdout, "w", buffering=1)  # noqa: SIM115 - open for the process's lifetime
    err = open(stderr, "w", buffering=1)  # noqa: SIM115
    os.dup2(out.fileno(), 1)
    os.dup2(err.fileno(), 2)
    sys.stdout, sys.stderr = out, err
    import torch

    from core.runtime.errors import run_cli

    # The tiny model's matrices are 32 wide: one thread is many times faster than two fighting over them.
    torch.set_num_threads(1)
    if setup is not None:
        setup()
    code = run_cli(importlib.import_module(CLI_MODULES[module]).main, argv)
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
            raise TimeoutError(f"the run did not finish in {timeout} s; stderr:\n{self.stderr}")
        return self.process.exitcode

    def wait_for_stderr(self, text: str, timeout: float = 120) -> None:
        self.wait_until(lambda: text in self.stderr, f"{text!r} on stderr", timeout)

    def wait_until(self, done: Callable[[], bool], what: str, timeout: float = 120, poll: float = 0.05) -> None:
        """Poll ``done()`` while the run lives; an AssertionError if it ends or times out first."""
        deadline = time.monotonic() + timeout
        while not done():
            if not self.process.is_alive() or time.monotonic() > deadline:
                raise AssertionError(f"never saw {what} while the run lived; stderr:\n{self.stderr}")
            time.sleep(poll)

    def interrupt(self, signal_number: int) -> int:
        """Send ``signal_number`` as a shell would, then the exit code (minus the signal that ended it)."""
        os.kill(self.pid, signal_number)
        return self.wait()


def start_cli(
    module: str,
    args: list[str | Path],
    folder: Path,
    env: dict[str, str] | None = None,
    name: str = "run",
    as_user: bool = False,
    setup: Callable[[], None] | None = None,
) -> Run:
    """Start ``python -m MODULE ARGS`` (a key of :data:`CLI_MODULES`); its stdout and stderr go to files in ``folder``.

    ``as_user``: file modes bind even when the tests run as root (read-only folders stay read-only).
    ``setup``: a module-level function the child calls first (e.g. to register a test model).
    """
    stdout, stderr = folder / f"{name}.stdout", folder / f"{name}.stderr"
    argv = [str(a) for a in args]
    arguments = (module, argv, env or {}, str(stdout), str(stderr), as_user, setup)
    process = _CONTEXT.Process(target=_child, args=arguments, name=name)
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
