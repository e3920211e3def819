"""Checkpoints of a training run, the RNG states they carry, and the interrupts that write them.

A checkpoint is a folder ``checkpoints/step-NNNNNN`` of data only, never unpickled:

- ``adapter_model.safetensors`` + ``adapter_config.json`` + ``embedding_lens.json``: the LoRA weights so far;
- ``trainer_state.safetensors``: every tensor of the optimizer, scheduler, loss scaler and RNG states, with the
  rest of those states as JSON in the file's metadata (:func:`encode_state` keeps tuples, non-string keys and
  numpy arrays, so they come back exactly);
- ``trainer_state.json``: step, settings, the pairs' fingerprint, losses and scores.

Checkpoints are written into a staging folder and renamed into place, so a kill never leaves a partial one; a
damaged one is set aside for the newest intact one. A checkpoint of older versions (``trainer_state.pt``, a pickle)
is read with torch's weights-only unpickler alone, which admits tensors, plain containers and numbers (and numpy's
array rebuild for the numpy RNG state), so it still resumes; one holding anything else is refused, never run.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from core.runtime.errors import TrainError
from core.runtime.files import atomic_write, write_json
from core.training.config import TrainConfig

__all__ = [
    "HELD_SIGNALS",
    "Checkpoint",
    "LegacyCheckpointError",
    "check_resumable",
    "decode_state",
    "encode_state",
    "interrupts_held",
    "latest_checkpoint",
    "read_checkpoint",
    "rng_states",
    "set_rng_states",
    "set_torch_rng_state",
    "stop_signals_interrupt",
    "torch_rng_state",
    "write_checkpoint",
]

log = logging.getLogger(__name__)

STATE_TENSORS = "trainer_state.safetensors"
STATE_JSON = "trainer_state.json"
LEGACY_STATE = "trainer_state.pt"  # the pickle format of older versions: refused
RESUME_KEYS = frozenset({"optimizer", "scheduler", "rng_by_rank"})


class LegacyCheckpointError(TrainError):
    """An older pickle-format checkpoint holding more than data: it is not loaded (unpickling it could run code)."""


# ----- data-only state: JSON with tensors beside it


def encode_state(value: Any, tensors: dict[str, Tensor]) -> Any:
    """``value`` as JSON-ready data; its tensors move into ``tensors`` (keyed by their order), replaced by
    references. Tuples, dicts with other than plain string keys and numpy arrays are tagged, so
    :func:`decode_state` rebuilds them exactly."""
    if isinstance(value, Tensor):
        key = str(len(tensors))
        tensors[key] = value.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.dtype.str, "data": value.tolist()}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return {"__tuple__": [encode_state(item, tensors) for item in value]}
    if isinstance(value, list):
        return [encode_state(item, tensors) for item in value]
    if isinstance(value, Mapping):
        if all(isinstance(key, str) and not key.startswith("__") for key in value):
            return {key: encode_state(item, tensors) for key, item in value.items()}
        return {"__items__": [[encode_state(k, tensors), encode_state(v, tensors)] for k, v in value.items()]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store a {type(value).__name__} in a checkpoint")


def decode_state(value: Any, tensors: Mapping[str, Tensor]) -> Any:
    """The inverse of :func:`encode_state`."""
    if isinstance(value, list):
        return [decode_state(item, tensors) for item in value]
    if not isinstance(value, dict):
        return value
    if "__tensor__" in value:
        return tensors[value["__tensor__"]]
    if "__ndarray__" in value:
        return np.array(value["data"], dtype=np.dtype(value["__ndarray__"]))
    if "__tuple__" in value:
        return tuple(decode_state(item, tensors) for item in value["__tuple__"])
    if "__items__" in value:
        return {decode_state(k, tensors): decode_state(v, tensors) for k, v in value["__items__"]}
    return {key: decode_state(item, tensors) for key, item in value.items()}


def write_resume_state(folder: Path, state: Mapping[str, Any]) -> None:
    """``state`` (optimizer, scheduler, scaler, RNG) as ``trainer_state.safetensors``, written atomically."""
    from safetensors.torch import save

    tensors: dict[str, Tensor] = {}
    tree = encode_state(dict(state), tensors)
    # Serialized in memory first: a full disk then surfaces as an OSError with its errno, from the write below.
    data = save(tensors, metadata={"state": json.dumps(tree)})
    with atomic_write(folder / STATE_TENSORS, "wb") as handle:
        handle.write(data)


def read_resume_state(folder: Path) -> dict[str, Any]:
    """What :func:`write_resume_state` wrote; raises ``ValueError``/``OSError`` when it is damaged or incomplete."""
    from safetensors import safe_open

    with safe_open(str(folder / STATE_TENSORS), framework="pt") as handle:
        metadata = handle.metadata() or {}
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (not a dict)
    if "state" not in metadata:
        raise ValueError(f"{STATE_TENSORS} holds no trainer state")
    state = decode_state(json.loads(metadata["state"]), tensors)
    if not isinstance(state, dict) or RESUME_KEYS - state.keys():
        raise ValueError(f"{STATE_TENSORS} lacks the optimizer, scheduler or RNG states")
    return state


def read_legacy_state(folder: Path) -> dict[str, Any]:
    """The ``trainer_state.pt`` of older versions, read by torch's weights-only unpickler: tensors, plain containers
    and numbers, plus numpy's array rebuild (the numpy RNG state is an array). Nothing else is admitted, so nothing
    in the file runs.

    Raises:
        LegacyCheckpointError: the file holds anything else (it is refused, not loaded).
        ValueError, RuntimeError, OSError: it is damaged or incomplete.
    """
    import pickle

    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    allowed = [multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]
    path = folder / LEGACY_STATE
    try:
        with torch.serialization.safe_globals(allowed):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        named = re.search(r"GLOBAL ([\w.]+)", str(error))  # what the file would have called when unpickled
        reason = f" (it calls {named.group(1)})" if named else ""
        raise LegacyCheckpointError(
            f"{path} (the pickle format of older versions) holds more than tensors and plain data, so it is not "
            f"loaded: unpickling it could run code{reason}. Start fresh: a new --out (or delete {folder.parent}) "
            "without --resume"
        ) from None
    if not isinstance(state, dict) or RESUME_KEYS - state.keys():
        raise ValueError(f"{LEGACY_STATE} lacks the optimizer, scheduler or RNG states")
    return state


# ----- reading and choosing a checkpoint


@dataclass
class Checkpoint:
    """A checkpoint read whole and checked before anything is restored from it."""

    folder: Path
    state: dict[str, Any]  # trainer_state.json: step, config, data, losses...
    weights: dict[str, Tensor]  # adapter_model.safetensors
    blob: dict[str, Any]  # trainer_state.safetensors: optimizer, scheduler, scaler, rng_by_rank


def read_checkpoint(folder: Path) -> Checkpoint:
    """Every file of ``folder`` loaded; raises (``OSError``, ``ValueError``, ...) if one is missing or damaged, and
    :class:`LegacyCheckpointError` for an older pickle-format state holding more than data (not loaded)."""
    from safetensors.torch import load_file

    legacy = not (folder / STATE_TENSORS).exists() and (folder / LEGACY_STATE).exists()
    blob = read_legacy_state(folder) if legacy else None  # first: a refusal must not wait behind other damage
    state = json.loads((folder / STATE_JSON).read_text())
    if not isinstance(state, dict) or state.get("step") != int(folder.name.removeprefix("step-")):
        raise ValueError(f"{STATE_JSON} does not describe {folder.name}")
    weights = load_file(str(folder / "adapter_model.safetensors"))
    return Checkpoint(folder, state, weights, blob if blob is not None else read_resume_state(folder))


def latest_checkpoint(root: Path, set_aside: bool) -> Checkpoint:
    """The newest checkpoint under ``root`` that reads whole; newer damaged ones are renamed ``damaged-*``
    (when ``set_aside``). One of the older pickle format holding more than data is refused
    (:class:`LegacyCheckpointError`): the folder was tampered with, so no older checkpoint there is trusted either."""
    folders = sorted(root.glob("step-*"), reverse=True)
    if not folders:
        raise TrainError(f"nothing to resume: no checkpoints in {root}; run without --resume to start")
    damaged: list[str] = []
    for folder in folders:
        try:
            checkpoint = read_checkpoint(folder)
        except LegacyCheckpointError:
            raise
        except Exception as exc:  # any unreadable part (truncated, missing, garbled) makes it unusable
            reason = str(exc).splitlines()[0] if str(exc) else ""
            damaged.append(f"{folder.name} ({type(exc).__name__}: {reason})")
            continue
        if damaged:
            log.warning("damaged checkpoint(s) %s; resuming from %s instead", "; ".join(damaged), folder.name)
            if set_aside:  # kept for a look, out of the way of later resumes and checkpoint pruning
                for bad in folders[: folders.index(folder)]:
                    os.replace(bad, root / f"damaged-{bad.name}-{int(time.time())}")
        return checkpoint
    raise TrainError(
        f"no usable checkpoint in {root}: {'; '.join(damaged)}. "
        f"Start fresh: delete {root} (or choose a new --out) and run without --resume"
    )


def check_resumable(
    checkpoint: Checkpoint, config: TrainConfig, data: Mapping[str, Any], world: int, out: Path
) -> None:
    """Refuse (naming each difference) a resume whose settings, pairs or process count differ from the checkpoint's.

    Args:
        data: this run's pair provenance (``file``, ``sha256``, ``pairs_sha256``).
    """
    state, name = checkpoint.state, checkpoint.folder.name
    saved_data = state.get("data")
    # The pairs' content decides, not their path: a moved file resumes, an edited one does not.
    problems = config.differences(state["config"], ignore=frozenset({"pairs"}) if saved_data else frozenset())
    if saved_data is None:
        log.warning("%s predates pair fingerprints: the pairs file's content cannot be checked", name)
    elif saved_data["pairs_sha256"] != data["pairs_sha256"]:
        if saved_data["sha256"] != data["sha256"]:
            problems.append(
                f"the pairs file {data['file']} is not the one trained on "
                f"(sha256 {str(saved_data['sha256'])[:12]}... in the checkpoint, {str(data['sha256'])[:12]}... now)"
            )
        else:
            problems.append(f"the training pairs differ from the checkpoint's ({saved_data['file']})")
    if state["world_size"] != world:
        problems.append(f"processes: checkpoint {state['world_size']} vs now {world}")
    if problems:
        raise TrainError(
            f"cannot resume {checkpoint.folder}: {'; '.join(problems)}. Resume with the checkpoint's settings "
            f"and pairs, or start fresh: a new --out (or delete {out / 'checkpoints'})"
        )
    if saved_data and saved_data["file"] != data["file"]:
        log.info("pairs moved from %s to %s, same content: resuming", saved_data["file"], data["file"])


def write_checkpoint(
    root: Path,
    step: int,
    save_adapter: Callable[[Path], None],
    resume_state: Mapping[str, Any],
    state: Mapping[str, Any],
    keep: int,
) -> Path:
    """Write ``checkpoints/step-NNNNNN`` under ``root`` and keep the newest ``keep``; returns its folder.

    Args:
        save_adapter: writes the adapter files into the folder it is given.
        resume_state: optimizer, scheduler, scaler and ``rng_by_rank`` (tensors and plain data).
        state: ``trainer_state.json`` (must hold ``step``).
    """
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    staging = root / f".tmp-step-{step:06d}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir()
        save_adapter(staging)
        write_resume_state(staging, resume_state)
        write_json(staging / STATE_JSON, dict(state))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # a checkpoint cut short (full disk, kill) is never kept
        raise
    # Renamed out of the step-* names before deletion: a kill while deleting leaves no partial checkpoint.
    if final.exists():
        os.replace(final, root / f".old-{final.name}")
    os.replace(staging, final)
    for old in sorted(root.glob("step-*"))[: -max(1, keep)]:
        os.replace(old, root / f".old-{old.name}")
    for old in root.glob(".old-step-*"):
        shutil.rmtree(old)
    return final


# ----- random state


def torch_rng_state() -> tuple[Tensor, list[Tensor]]:
    """The CPU and CUDA generators' states: dropout draws from the generator of the device it runs on."""
    return torch.get_rng_state(), torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []


def set_torch_rng_state(state: tuple[Tensor, list[Tensor]]) -> None:
    torch.set_rng_state(state[0])
    if state[1]:
        torch.cuda.set_rng_state_all(state[1])


def rng_states() -> dict[str, Any]:
    """Every generator a step draws from: torch (CPU and CUDA), Python's and numpy's."""
    cpu, cuda = torch_rng_state()
    return {"torch": cpu, "cuda": cuda, "python": random.getstate(), "numpy": np.random.get_state()}


def set_rng_states(states: Mapping[str, Any]) -> None:
    set_torch_rng_state((states["torch"], list(states.get("cuda", []))))
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])


# ----- interrupts

# Ctrl-C, a polite kill and a closed terminal (or ssh session) all stop a run the same way: a checkpoint of the last
# completed step, then exit.
HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)  # SIGINT raises KeyboardInterrupt by itself


@contextmanager
def interrupts_held() -> Iterator[None]:
    """SIGINT/SIGTERM/SIGHUP inside the block take effect at its end, as a ``KeyboardInterrupt``.

    It guards a step's update (optimizer, scheduler, step counter, log row): cut there, the weights
    would hold part of a step that the checkpoint does not count. Only the main thread gets signals.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum)) for sig in HELD_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)  # None: set outside Python
    if received:
        raise KeyboardInterrupt


@contextmanager
def stop_signals_interrupt() -> Iterator[None]:
    """Inside the block SIGTERM and SIGHUP raise ``KeyboardInterrupt``, as Ctrl-C does; handlers restored after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, signal.SIG_DFL if old is None else old)
