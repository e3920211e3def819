"""Fixtures of the reliability suite, and the table's size at the end of the run."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.reliability.runner import Run, start_cli

CACHE_TIMEOUT_S = 2  # how long a run waits for a locked cache before going on without it


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    output: Path


@pytest.fixture
def home(tmp_path) -> Path:
    """The cache root of the runs (EMBEDDING_LENS_HOME): the embedding cache lives in it."""
    folder = tmp_path / "home"
    folder.mkdir()
    return folder


@pytest.fixture
def cache_file(home) -> Path:
    return home / "embeddings.sqlite"


@pytest.fixture
def cli(home, tmp_path) -> Callable[..., Run]:
    """``cli(module, *args, env=..., setup=...)`` -> a running ``python -m MODULE ARGS``; ``home`` is its cache root."""
    counter = iter(range(1000))

    def run(
        module: str,
        *args: str | Path,
        env: dict[str, str] | None = None,
        as_user: bool = False,
        setup: Callable[[], None] | None = None,
    ) -> Run:
        settings = {"EMBEDDING_LENS_HOME": str(home), "EMBEDDING_LENS_CACHE_TIMEOUT": str(CACHE_TIMEOUT_S)}
        settings.update(env or {})
        name = f"{module.rsplit('.', 1)[-1]}{next(counter)}"
        return start_cli(module, list(args), tmp_path, settings, name=name, as_user=as_user, setup=setup)

    return run


@pytest.fixture
def start(cli, tiny_model_dir, tmp_path) -> Callable[..., Run]:
    """``start(*args, input=..., output=...)`` -> a running ``python -m core.embed`` on the tiny model."""

    def run(*args: str | Path, input: Path, output: Path | None = None, as_user: bool = False) -> Run:
        output = output if output is not None else tmp_path / "out" / "vectors.npy"
        argv = ["--model", tiny_model_dir, "--input", input, "--output", output, *args]
        return cli("core.embed", *argv, as_user=as_user)

    return run


@pytest.fixture
def embed(start, tmp_path) -> Callable[..., Outcome]:
    """``embed(*args, input=..., output=...)`` -> the finished run's exit code, stdout, stderr and output path."""

    def run(*args: str | Path, input: Path, output: Path | None = None, **options) -> Outcome:
        output = output if output is not None else tmp_path / "out" / "vectors.npy"
        process = start(*args, input=input, output=output, **options)
        code = process.wait()
        return Outcome(code, process.stdout, process.stderr, output)

    return run


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    """A folder on its own 4 MB tmpfs: a disk that fills up (mounting needs root; the case is skipped without)."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


# ----- the table's size

_HERE = Path(__file__).parent
_STATE: dict[str, set[str]] = {"run": set(), "passed": set()}


def pytest_collection_finish(session) -> None:
    _STATE["run"] = {
        item.nodeid
        for item in session.items
        if _HERE in item.path.parents and "case" in getattr(getattr(item, "callspec", None), "params", {})
    }


def pytest_runtest_logreport(report) -> None:
    if report.when == "call" and report.passed and report.nodeid in _STATE["run"]:
        _STATE["passed"].add(report.nodeid)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if _STATE["run"]:
        from tests.reliability.table import all_cases

        table = len(all_cases())
        run, passed = len(_STATE["run"]), len(_STATE["passed"])
        terminalreporter.write_sep("-", f"reliability table: {table} cases, {run} run, {passed} passed")
