"""Which weights a model is: SHA-256 of a folder's weight files (memoised by size and mtime in the cache root) or
of a loaded model's state dict. Results, cards and exports record it, so a number names the weights it came from.
May import: ``core.runtime``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import torch
from torch import nn

from core.runtime.errors import ModelNotFoundError
from core.runtime.files import write_json
from core.runtime.paths import cache_root

__all__ = ["folder_weights_hash", "state_dict_hash"]

log = logging.getLogger(__name__)


def folder_weights_hash(folder: str | Path) -> str:
    """SHA-256 over a folder's weight files (names and bytes), memoised by size and mtime."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.suffix in {".safetensors", ".bin"} and p.is_file())
    if not files:
        raise ModelNotFoundError(f"No weight files (.safetensors/.bin) in {folder}.")
    stamp = [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    memo_path = cache_root() / "weight-hashes.json"
    memo = _read_hash_memo(memo_path)
    entry = memo.get(str(folder.resolve()))
    if isinstance(entry, dict) and entry.get("stamp") == stamp and isinstance(entry.get("sha256"), str):
        return entry["sha256"]
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    memo[str(folder.resolve())] = {"stamp": stamp, "sha256": digest.hexdigest()}
    try:
        write_json(memo_path, memo)
    except OSError as error:  # a memo, like the embedding cache, never stops the work (full or read-only disk)
        log.warning("not remembering the weights' hash in %s (%s)", memo_path, error)
    return digest.hexdigest()


def _read_hash_memo(memo_path: Path) -> dict:
    """The weight-hash memo; a damaged one is set aside (``.damaged-<time>``) and rebuilt, as the sqlite cache is."""
    try:
        memo = json.loads(memo_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        memo = error
    if isinstance(memo, dict):
        return memo
    aside = memo_path.with_name(f"{memo_path.name}.damaged-{int(time.time())}")
    try:
        memo_path.rename(aside)
        log.warning("%s was damaged; set aside as %s and rebuilt", memo_path, aside.name)
    except OSError:
        log.warning("%s is damaged and cannot be set aside; not using it", memo_path)
    return {}


def state_dict_hash(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().to(torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()
