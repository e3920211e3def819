"""The project's errors, and the one runner that turns them into a CLI's exit.

Every problem a user can fix raises a :class:`LensError` subclass whose message names the problem
and the fix. CLIs and pages catch ``LensError`` alone: anything else is a bug and keeps its
traceback. Subclasses also derive from the builtin type callers expected before (``ValueError``,
``RuntimeError``), so ``except ValueError`` around a project call still works.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence

# Library modules log to ``logging.getLogger(__name__)``: these are the project packages' loggers.
# "__main__" too: `python -m analysis.faithfulness` runs the module under that name, so its module-level logger
# is "__main__", not "analysis.faithfulness", and without this its progress lines went nowhere.
PROJECT_LOGGERS = ("core", "analysis", "workbench", "__main__")


class LensError(Exception):
    """A problem the user can fix; the message says what is wrong and what to do."""


class ConfigError(LensError, ValueError):
    """An unknown or inconsistent setting: prompt, pooling, layer, method, precision, device, ..."""


class ModelNotFoundError(LensError, ValueError):
    """A model name that is neither packaged, nor a folder, nor reachable on a hub."""


class AdapterError(LensError, ValueError):
    """An adapter folder that is missing, incomplete, or made for another base model."""


class DataError(LensError):
    """A dataset or user file that cannot be read as asked."""


class DataUnavailableError(DataError):
    """A packaged dataset that is not on this machine yet (the message names the command that fetches it)."""


class ChecksumError(DataError):
    """A downloaded or cached file whose SHA-256 is not the pinned one."""


class UserFileError(DataError, ValueError):
    """A user's file or upload that cannot be read as asked: missing, empty, wrong type or encoding, no such column."""


class PairFileError(LensError, ValueError):
    """A positive-pairs file that cannot be used for training."""


class TrainError(LensError, ValueError):
    """A training run that cannot start or resume as asked."""


class GridError(LensError, ValueError):
    """A clustering grid specification that cannot run."""


class TaskUnavailableError(LensError, RuntimeError):
    """An mteb task whose data cannot be loaded here (no hub)."""


class EagerAttentionError(LensError, RuntimeError):
    """Attention capture asked of a model that does not run eager attention."""


class StorageError(LensError, OSError):
    """A write the disk refused for lack of room (no space left, quota, file size limit), or a folder another
    process is writing into; what was written before is intact."""


def configure_environment() -> None:
    """What every entry point (CLI or app) sets before loading models: no hub unless the user allows it.

    The default is offline so a wrong path fails at once instead of with a misleading connection error;
    ``HF_HUB_OFFLINE=0`` in the environment lets hub ids load where a hub is reachable.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at each record (a test's capture, a redirected stream)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def configure_logging(level: int = logging.INFO) -> None:
    """Library code logs to its module's logger; a CLI shows the project's records on stderr, plainly."""
    for name in PROJECT_LOGGERS:
        log = logging.getLogger(name)
        if not any(isinstance(handler, _CurrentStderr) for handler in log.handlers):
            handler = _CurrentStderr()
            handler.setFormatter(logging.Formatter("%(message)s"))
            log.addHandler(handler)
        log.setLevel(level)


def run_cli(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run a CLI's ``main``: environment and logging set, ``LensError`` -> ``error: ...`` and exit 2.

    Ctrl-C exits 130 with a line saying so (the commands write atomically and resume, so nothing
    half-written is left); any other exception is a bug and keeps its traceback.
    """
    configure_environment()
    configure_logging()
    # A process started from a background job (`cmd &` in a script, nohup) inherits SIGINT ignored, and Python
    # then never raises KeyboardInterrupt: Ctrl-C and the app's Stop button (which sends SIGINT) would do nothing.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return main(argv)
    except LensError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: nothing half-written was kept; the same command resumes.", file=sys.stderr)
        return 130
