"""Background training runs for the workbench: start ``python -m core.train`` detached, read its progress, stop it.

The job is a plain subprocess (fixed argument list, no shell) writing into its adapter folder:
``job.json`` (command, pid), ``job.log`` (its output) and the trainer's own ``train_log.jsonl``.
Stopping sends SIGINT, which the trainer answers with a checkpoint of its last completed step, so
:func:`resume_training` (the same command with ``--resume``) ends at the adapter an unstopped job makes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from core.models.adapters import ADAPTER_CONFIG, list_adapters
from core.models.registry import DEFAULT_MODEL
from core.runtime.errors import ConfigError, TrainError
from core.runtime.files import folder_locked, lock_folder, process_alive, write_json
from core.runtime.paths import REPO_ROOT

JobState = Literal["running", "finished", "failed", "stopped", "unknown"]


@dataclass
class JobStatus:
    state: JobState
    steps_done: int
    steps_total: int | None
    last: dict[str, Any] | None  # the last train_log row
    message: str = ""

    @property
    def fraction(self) -> float:
        return min(1.0, self.steps_done / self.steps_total) if self.steps_total else 0.0


@dataclass(frozen=True)
class TrainingRequest:
    """A small training run as the Adapters page asks for it: a folder name and the few settings it shows."""

    name: str
    pairs: str = "bible"  # "bible" or a pair file (JSONL/TSV)
    prompt: str = "eol"
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


def start_training(out: str | Path, options: list[str], python: str = sys.executable) -> subprocess.Popen:
    """Launch ``python -m core.train --out OUT OPTIONS`` in the background; refuses a folder already in use."""
    folder = Path(out)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _launching(folder):
        _refuse_if_in_use(folder)
        if (folder / "adapter_config.json").is_file() or (folder / "checkpoints").is_dir():
            raise TrainError(f"{folder} already holds an adapter or checkpoints; choose a new folder name")
        folder.mkdir(parents=True, exist_ok=True)
        return _launch(folder, [python, "-m", "core.train", "--out", str(folder), *options, "--no-progress"], "wb")


def resume_training(folder: str | Path, python: str = sys.executable) -> subprocess.Popen:
    """Continue a stopped or failed job from its last checkpoint: its own command plus ``--resume``."""
    folder = Path(folder)
    if not (folder / "job.json").is_file():
        raise TrainError(f"{folder} has no training job to resume; start one instead")
    with _launching(folder):
        _refuse_if_in_use(folder)
        if job_status(folder).state == "finished":
            raise TrainError(f"the job in {folder} is finished: nothing to resume")
        if not any(folder.glob("checkpoints/step-*")):
            raise TrainError(f"{folder} has no checkpoint yet; start the job again in a new folder")
        command = json.loads((folder / "job.json").read_text())["command"]
        return _launch(folder, [python, *command[1:], *([] if "--resume" in command else ["--resume"])], "ab")


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
    if (folder / "job.json").is_file() and job_status(folder).state == "running":
        raise TrainError(f"{folder} already has a running job; stop it first or choose another folder")
    if folder_locked(folder):
        raise TrainError(f"{folder} is in use by another training run right now; wait for it or choose another folder")


def _launch(folder: Path, command: list[str], log_mode: Literal["wb", "ab"]) -> subprocess.Popen:
    log = open(folder / "job.log", log_mode)  # noqa: SIM115 - the child owns it for its lifetime
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    write_json(folder / "job.json", {"pid": process.pid, "command": command, "started": time.time()})
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
    """Rows of ``train_log.jsonl``; a line still being written is skipped."""
    path = Path(folder) / "train_log.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def _steps_total(command: list[str]) -> int | None:
    if "--steps" in command:
        try:
            return int(command[command.index("--steps") + 1])
        except (IndexError, ValueError):
            return None
    return None


def job_status(folder: str | Path) -> JobStatus:
    folder = Path(folder)
    rows = read_train_log(folder)
    job = json.loads((folder / "job.json").read_text()) if (folder / "job.json").is_file() else {}
    total = _steps_total(job.get("command", []))
    steps = rows[-1]["step"] if rows else 0
    last = rows[-1] if rows else None
    if (folder / "card.json").is_file():
        return JobStatus("finished", steps, total or steps, last)
    if job and process_alive(int(job["pid"])):
        return JobStatus("running", steps, total, last)
    tail = ""
    if (folder / "job.log").is_file():
        lines = [x for x in (folder / "job.log").read_text(errors="replace").splitlines() if x.strip()]
        tail = lines[-1] if lines else ""
    if job.get("stopped"):
        return JobStatus("stopped", steps, total, last, tail)
    if job:
        return JobStatus("failed", steps, total, last, tail)
    return JobStatus("unknown", steps, total, last)


def stop_training(folder: str | Path) -> None:
    """Ctrl-C for the job: the trainer writes a checkpoint and exits; ``--resume`` continues it."""
    folder = Path(folder)
    job = json.loads((folder / "job.json").read_text())
    if process_alive(int(job["pid"])):
        os.kill(int(job["pid"]), signal.SIGINT)
    write_json(folder / "job.json", {**job, "stopped": time.time()})
