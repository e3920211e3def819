"""Background training runs for the workbench: start ``python -m core.train`` detached, read its progress, stop it.

The job is a plain subprocess (fixed argument list, no shell) writing into its adapter folder:
``job.json`` (its record), ``job.log`` (its output) and the trainer's own ``train_log.jsonl``.
Stopping sends SIGINT, which the trainer answers with a checkpoint of its last completed step, so
:func:`resume_training` (the same settings with ``--resume``) ends at the adapter an unstopped job makes.
While it runs, :attr:`JobStatus.phase` says what it is doing (starting, reading pairs, loading the model, tokenizing,
training step i of n with the time left, writing the adapter), from the trainer's ``phase: ...`` lines in ``job.log``
and the rows of ``train_log.jsonl``. A pair file that is not there is refused before a job starts (no folder made).

Invariants (a run folder may come from anyone, so its files are data, never code or a command):
- ``job.json`` holds the job's settings as JSON values (``settings``: trainer option name -> value), its pid and
  the pid's start time. Nothing in it is executed: a resume rebuilds ``python -m core.train --out FOLDER ...``
  from those settings after the trainer's own parser and :class:`~core.training.config.TrainConfig` validate them,
  with this interpreter and this folder. A record written before settings existed (a ``command`` list) is read the
  same way: its options are validated, its interpreter and module are not used.
- A pid is the job only while that process started when the job did and runs ``core.train`` on this folder
  (pids are reused after a reboot or a kill): otherwise the job is not running and nothing is signalled.
- An unreadable ``job.json`` is a ``damaged`` run, shown as such, never an exception in a page.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Any, Literal

import psutil

from core.encoding.setting import DEFAULT_PROMPT
from core.models.adapters import ADAPTER_CONFIG, list_adapters
from core.models.registry import DEFAULT_MODEL
from core.runtime.errors import ConfigError, LensError, TrainError
from core.runtime.files import folder_locked, lock_folder, process_alive, write_json
from core.runtime.paths import REPO_ROOT

__all__ = [
    "JOB_FILE",
    "PHASE_PREFIX",
    "JobState",
    "JobStatus",
    "TrainingRequest",
    "adapter_label",
    "can_resume",
    "check_pair_file",
    "job_status",
    "read_train_log",
    "resume_training",
    "start_training",
    "stop_training",
    "stopped_checkpoints",
    "train_command",
]

JOB_FILE = "job.json"
PHASE_PREFIX = "phase: "  # the trainer's log lines that name what it is doing (core.training.trainer)
_LOG_TAIL_BYTES = 65536  # phases and the last message are near the end of job.log
JobState = Literal["running", "finished", "failed", "stopped", "damaged", "unknown"]
# Options a job record may not carry: the folder and resuming are the app's to set, a --config file is code-free
# but outside the record's validation.
_NOT_SETTINGS = frozenset({"out", "resume", "config"})
_START_TOLERANCE_S = 2.0  # create_time is rounded by the kernel's clock ticks


@dataclass
class JobStatus:
    state: JobState
    steps_done: int
    steps_total: int | None
    last: dict[str, Any] | None  # the last train_log row
    message: str = ""
    phase: str = ""  # while running: what the job is doing now, in words (e.g. "training step 3 of 20, ...")

    @property
    def fraction(self) -> float:
        return min(1.0, self.steps_done / self.steps_total) if self.steps_total else 0.0


@dataclass(frozen=True)
class TrainingRequest:
    """A small training run as the Adapters page asks for it: a folder name and the few settings it shows."""

    name: str
    pairs: str = "bible"  # "bible" or a pair file (JSONL/TSV)
    prompt: str = DEFAULT_PROMPT
    steps: int = 20
    batch_size: int = 16
    lora_layers: int = 8  # LoRA on the top k layers; 0 = all
    lr: float = 3e-4
    checkpoint_every: int = 10
    base_model: str = DEFAULT_MODEL  # the sidebar's model: a packaged name, a folder or a hub id
    device: str = "auto"

    def folder(self, root: str | Path) -> Path:
        """The adapter folder under ``root``; a name that is not a plain folder name is a :class:`ConfigError`."""
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", self.name) or set(self.name) == {"."}:
            raise ConfigError(
                f"Adapter name {self.name!r}: use 1-64 letters, digits, '.', '_' or '-' (it becomes a folder)."
            )
        return Path(root) / self.name

    def options(self) -> list[str]:
        """The ``python -m core.train`` options (without ``--out``) this request stands for."""
        return [
            "--pairs", self.pairs, "--prompt", self.prompt, "--steps", str(self.steps),
            "--batch-size", str(self.batch_size), "--lora-layers", str(self.lora_layers), "--lr", str(self.lr),
            "--checkpoint-every", str(self.checkpoint_every), "--base-model", self.base_model, "--device", self.device,
        ]  # fmt: skip


# ----- settings <-> trainer options


def _train_parser() -> argparse.ArgumentParser:
    from core.training.cli import build_parser

    return build_parser()


def _parse(argv: list[str], what: str) -> argparse.Namespace:
    """``core.train``'s own parsing of ``argv`` (its errors as :class:`TrainError`, not an exit)."""
    parser = _train_parser()
    errors = StringIO()
    try:
        with redirect_stderr(errors):
            return parser.parse_args(argv)
    except SystemExit:
        reason = (errors.getvalue().strip().splitlines() or ["invalid options"])[-1]
        raise TrainError(f"{what}: {reason.removeprefix(parser.prog + ': ').removeprefix('error: ')}") from None


def _settings(options: list[str], what: str) -> dict[str, Any]:
    """The trainer settings ``options`` stand for (option name -> JSON value), validated as ``core.train`` would."""
    marker = "\0unset"  # no real folder has this name: a parsed --out other than it came from ``options``
    args = vars(_parse(["--out", marker, *options], what))
    if str(args.get("out")) != marker or args.get("resume") or args.get("config") is not None:
        raise TrainError(f"{what}: --out, --resume and --config are the job's to set; leave them out")
    defaults = vars(_parse(["--out", marker], what))
    settings = {k: v for k, v in args.items() if k not in _NOT_SETTINGS and (k not in defaults or defaults[k] != v)}
    return {k: str(v) if isinstance(v, Path) else v for k, v in settings.items()}


def train_command(folder: str | Path, settings: dict[str, Any], python: str = sys.executable) -> list[str]:
    """``python -m core.train --out FOLDER OPTIONS`` rebuilt from ``settings`` (a job record's), validated first.

    Unknown names, values of the wrong type and settings :class:`TrainConfig` refuses are a :class:`TrainError`.
    """
    from core.training.cli import config_from_args

    what = f"the job record in {folder}"
    if not isinstance(settings, dict):
        raise TrainError(f"{what} has no settings object")
    actions = {a.dest: a for a in _train_parser()._actions if a.option_strings}
    options: list[str] = []
    for name, value in settings.items():
        action = actions.get(name)
        if action is None or name in _NOT_SETTINGS:
            raise TrainError(f"{what} has a setting core.train does not take: {name!r}")
        if isinstance(action, argparse.BooleanOptionalAction):
            if not isinstance(value, bool):
                raise TrainError(f"{what}: {name} must be true or false, not {value!r}")
            options.append(action.option_strings[0 if value else 1])
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            options += [action.option_strings[0], ",".join(value)]
        elif isinstance(value, (str, int, float)) and not isinstance(value, bool):
            options += [action.option_strings[0], str(value)]
        else:
            raise TrainError(f"{what}: {name} has a value of the wrong kind: {value!r}")
    try:
        config_from_args(_parse(["--out", str(folder), *options], what))
    except (LensError, TypeError, ValueError) as error:
        raise TrainError(f"{what} is not a valid training run: {error}") from None
    return [python, "-m", "core.train", "--out", str(folder), *options]


# ----- the job record


def _read_job(folder: Path) -> dict[str, Any] | None:
    """``job.json`` as a dict; None when there is none; a :class:`TrainError` naming the damage otherwise."""
    path = folder / JOB_FILE
    if not path.is_file():
        return None
    try:
        job = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise TrainError(f"{path} is damaged ({str(error)[:120]})") from None
    if not isinstance(job, dict) or not isinstance(job.get("pid"), int) or isinstance(job.get("pid"), bool):
        raise TrainError(f"{path} is damaged (not a job record with a pid)")
    return job


def _job_settings(folder: Path, job: dict[str, Any]) -> dict[str, Any]:
    """A record's settings; an older record's ``command`` is reduced to the options it passed to core.train."""
    if "settings" in job:
        return job["settings"]
    command = job.get("command")
    if not isinstance(command, list) or not all(isinstance(c, str) for c in command):
        raise TrainError(f"{folder / JOB_FILE} is damaged (no settings)")
    options = command[3:] if command[1:3] == ["-m", "core.train"] else command
    options = [o for o in options if o not in ("--resume", "--no-progress")]
    if "--out" in options:  # the folder is the one the record is in, whatever it says
        at = options.index("--out")
        options = options[:at] + options[at + 2 :]
    return _settings(options, f"the job record in {folder}")


def _is_the_job(folder: Path, job: dict[str, Any]) -> bool:
    """Whether the job's pid is still the job: alive, started when it did, running core.train on ``folder``."""
    pid = job["pid"]
    if pid <= 0 or not process_alive(pid):
        return False
    try:
        process = psutil.Process(pid)
        started, command = process.create_time(), process.cmdline()
    except (psutil.Error, OSError):
        return False
    recorded = job.get("pid_started")
    if isinstance(recorded, (int, float)) and abs(started - recorded) > _START_TOLERANCE_S:
        return False
    if "core.train" not in command or "--out" not in command:
        return False
    at = command.index("--out")
    return at + 1 < len(command) and Path(command[at + 1]).resolve() == folder.resolve()


def start_training(out: str | Path, options: list[str], python: str = sys.executable) -> subprocess.Popen:
    """Launch ``python -m core.train --out OUT OPTIONS`` in the background; refuses a folder already in use.

    ``options`` are validated by core.train's parser and settings first (a :class:`TrainError` otherwise).
    """
    folder = Path(out)
    settings = _settings(list(options), "the training options")
    command = train_command(folder, settings, python)
    check_pair_file(settings.get("pairs", "bible"))
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _launching(folder):
        _refuse_if_in_use(folder)
        if (folder / ADAPTER_CONFIG).is_file() or (folder / "checkpoints").is_dir():
            raise TrainError(f"{folder} already holds an adapter or checkpoints; choose a new folder name")
        folder.mkdir(parents=True, exist_ok=True)
        return _launch(folder, [*command, "--no-progress"], settings, "wb")


def resume_training(folder: str | Path, python: str = sys.executable) -> subprocess.Popen:
    """Continue a stopped or failed job from its last checkpoint: its validated settings plus ``--resume``."""
    folder = Path(folder)
    if not (folder / JOB_FILE).is_file():
        raise TrainError(f"{folder} has no training job to resume; start one instead")
    with _launching(folder):
        _refuse_if_in_use(folder)
        status = job_status(folder)
        if status.state == "finished":
            raise TrainError(f"the job in {folder} is finished: nothing to resume")
        if status.state == "damaged":
            raise TrainError(f"{status.message}; start the job again in a new folder")
        if not any(folder.glob("checkpoints/step-*")):
            raise TrainError(f"{folder} has no checkpoint yet; start the job again in a new folder")
        job = _read_job(folder)
        assert job is not None  # job_status read it just now
        settings = _job_settings(folder, job)
        command = train_command(folder, settings, python)
        check_pair_file(settings.get("pairs", "bible"))
        return _launch(folder, [*command, "--no-progress", "--resume"], settings, "ab")


@contextmanager
def _launching(folder: Path) -> Iterator[None]:
    """One launch at a time among the runs beside ``folder``: two tabs pressing Start at once see each other's job."""
    descriptor = lock_folder(folder.parent, "folder", wait=True)
    try:
        yield
    finally:
        os.close(descriptor)


def _refuse_if_in_use(folder: Path) -> None:
    """A job of the app that runs, or any training run holding the folder (``core.train`` locks its --out)."""
    if (folder / JOB_FILE).is_file() and job_status(folder).state == "running":
        raise TrainError(f"{folder} already has a running job; stop it first or choose another folder")
    if folder_locked(folder):
        raise TrainError(f"{folder} is in use by another training run right now; wait for it or choose another folder")


def check_pair_file(pairs: Any) -> None:
    """Refuse a pair file the job could not read, before anything starts or any folder is made.

    ``pairs`` is ``"bible"`` or a path as the job sees it (relative paths from the repository, the job's working
    folder). Its content is checked by the trainer, which says what is wrong with it.

    Raises:
        TrainError: naming the path looked at and what to give instead.
    """
    if pairs == "bible" or not isinstance(pairs, str):
        return
    path = Path(pairs) if Path(pairs).is_absolute() else REPO_ROOT / pairs
    fix = 'give the path of a JSONL/TSV pair file (`python -m core.pairs` makes one) or "bible"'
    if not path.exists():
        raise TrainError(f"pair file {pairs} does not exist (looked for {path}); {fix}")
    if not path.is_file():
        raise TrainError(f"pair file {pairs} is a folder, not a file ({path}); {fix}")
    if not os.access(path, os.R_OK):
        raise TrainError(f"pair file {pairs} cannot be read (no permission on {path}); {fix}")


def _launch(
    folder: Path, command: list[str], settings: dict[str, Any], log_mode: Literal["wb", "ab"]
) -> subprocess.Popen:
    log = open(folder / "job.log", log_mode)  # noqa: SIM115 - the child owns it for its lifetime
    # A resumed job appends: this line ends the last run's phases, until the new process says its own.
    log.write(f"{PHASE_PREFIX}starting\n".encode())
    log.flush()
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    try:
        started = psutil.Process(process.pid).create_time()
    except psutil.Error:  # it ended already: no pid to check later
        started = time.time()
    record = {"pid": process.pid, "pid_started": started, "settings": settings, "started": time.time()}
    write_json(folder / JOB_FILE, record)
    return process


def can_resume(folder: str | Path) -> bool:
    """A stopped or failed job that left checkpoints: :func:`resume_training` continues it."""
    folder = Path(folder)
    return job_status(folder).state in ("stopped", "failed") and any(folder.glob("checkpoints/step-*"))


def stopped_checkpoints(root: str | Path) -> list[Path]:
    """The checkpoints of the runs under ``root`` that stopped or failed, each run's newest first.

    A checkpoint (``RUN/checkpoints/step-N``) holds the adapter as it was at step N (peft files and its settings),
    so it loads like a finished adapter. A running job's are left out: it prunes old checkpoints as it goes.
    """
    found = []
    for run in list_adapters(root, in_training=True):
        if job_status(run).state in ("stopped", "failed"):
            steps = sorted((run / "checkpoints").glob("step-*"), reverse=True)
            found += [step for step in steps if (step / ADAPTER_CONFIG).is_file()]
    return found


def adapter_label(folder: str | Path) -> str:
    """How a sidebar names an adapter folder: its path, and for a checkpoint its run and step."""
    folder = Path(folder)
    if folder.parent.name == "checkpoints" and folder.name.startswith("step-"):
        step = folder.name.removeprefix("step-").lstrip("0") or "0"
        return f"{folder.parent.parent.name} at step {step} (checkpoint of a stopped run): {folder}"
    return str(folder)


def read_train_log(folder: str | Path) -> list[dict[str, Any]]:
    """Rows of ``train_log.jsonl``; a line still being written (or not a JSON object with a step) is skipped."""
    path = Path(folder) / "train_log.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append(row)
    return rows


def _steps_total(folder: Path, job: dict[str, Any]) -> int | None:
    try:
        steps = _job_settings(folder, job).get("steps")
    except (TrainError, AttributeError):
        return None
    return steps if isinstance(steps, int) and not isinstance(steps, bool) else None


def _log_tail(folder: Path) -> list[str]:
    """The non-empty lines at the end of ``job.log`` (its last 64 KiB), or none."""
    path = folder / "job.log"
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, path.stat().st_size - _LOG_TAIL_BYTES))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip()]


def _running_phase(folder: Path, job: dict[str, Any], steps: int, total: int | None, rows: list[dict[str, Any]]) -> str:
    """What a running job is doing, in words: its last phase line, a training step with the time left, or its stop."""
    if job.get("stopped"):
        return "stopping: saving a checkpoint of the last completed step"
    said = next(
        (line.removeprefix(PHASE_PREFIX) for line in reversed(_log_tail(folder)) if line.startswith(PHASE_PREFIX)),
        "starting",
    )
    started = job.get("started")
    since = f" ({time.time() - started:.0f} s since the start)" if isinstance(started, (int, float)) else ""
    if said != "training":
        return f"{said}{since}"
    of = f" of {total}" if total else ""
    left = ""
    recent = [row["seconds"] for row in rows[-5:] if isinstance(row.get("seconds"), (int, float))]
    if total and recent:
        left = f", about {sum(recent) / len(recent) * max(total - steps, 0):.0f} s left"
    return f"training step {min(steps + 1, total or steps + 1)}{of}{left}"


def _stopped_message(folder: Path, steps: int, total: int | None) -> str:
    kept = sorted((folder / "checkpoints").glob("step-*"))
    of = f" of {total}" if total else ""
    if not kept:
        return f"Stopped at step {steps}{of} before any checkpoint was written: start it again."
    at = kept[-1].name.removeprefix("step-").lstrip("0") or "0"
    return f"Stopped after step {steps}{of}; its checkpoint at step {at} is kept: Resume continues from there."


def job_status(folder: str | Path) -> JobStatus:
    """What the run in ``folder`` is doing, from its files; never raises for a damaged record (``damaged``).

    A running job's :attr:`JobStatus.phase` says what it does now; a stopped job's message says what was kept."""
    folder = Path(folder)
    rows = read_train_log(folder)
    steps = rows[-1]["step"] if rows else 0
    last = rows[-1] if rows else None
    try:
        job = _read_job(folder)
    except TrainError as error:
        if (folder / "card.json").is_file():
            return JobStatus("finished", steps, steps, last)
        message = f"{error}: the run's state is unknown; its files are kept as they are"
        return JobStatus("damaged", steps, None, last, message)
    job = job or {}
    total = _steps_total(folder, job) if job else None
    if (folder / "card.json").is_file():
        return JobStatus("finished", steps, total or steps, last)
    if job and _is_the_job(folder, job):
        return JobStatus("running", steps, total, last, phase=_running_phase(folder, job, steps, total, rows))
    if job.get("stopped"):
        return JobStatus("stopped", steps, total, last, _stopped_message(folder, steps, total))
    lines = [line for line in _log_tail(folder) if not line.startswith(PHASE_PREFIX)]
    tail = lines[-1] if lines else ""
    if job:
        return JobStatus("failed", steps, total, last, tail)
    return JobStatus("unknown", steps, total, last)


def stop_training(folder: str | Path) -> None:
    """Ctrl-C for the job: the trainer writes a checkpoint and exits; ``--resume`` continues it.

    The signal goes only to the job's own process (see :func:`_is_the_job`): a pid that another process now has
    gets nothing, and the run is marked stopped.
    """
    folder = Path(folder)
    job = _read_job(folder)
    if job is None:
        raise TrainError(f"{folder} has no training job to stop")
    if _is_the_job(folder, job):
        os.kill(job["pid"], signal.SIGINT)
    write_json(folder / JOB_FILE, {**job, "stopped": time.time()})
