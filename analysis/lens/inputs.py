"""What the lens report reads: a task's sampled texts, held-apart positive pairs, and every layer's pooled vectors
from one shared forward per text, kept in resumable stage files.

Held-apart pairs are King James / World English Bible verse pairs whose verses appear in none of the passages the
shipped adapters were trained on (``load_bible_passages(limit=1200)``, the ``bible-passages`` pair method).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.runtime.files import atomic_write

__all__ = [
    "TRAINING_PASSAGES",
    "Grid",
    "encode_layers",
    "grid_key",
    "held_apart_pairs",
    "layer_combos",
    "load_stage",
    "save_stage",
]

log = logging.getLogger(__name__)

TRAINING_PASSAGES = 1200  # passages the shipped adapters' pairs were drawn from (their cards: 1,200 source texts)
VARIANT_NAMES = {False: "base", True: "adapter"}

# variant name -> (pooling, hidden-state index) -> (texts, hidden)
Grid = dict[str, dict[tuple[str, int], np.ndarray]]


def held_apart_pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` (KJV verse, WEB verse) pairs, none of whose verses occurs in the adapters' training passages."""
    from core.data import load_bible_pairs, load_bible_passages
    from core.data.sampling import sample_items

    training = load_bible_passages(limit=TRAINING_PASSAGES)
    kjv_seen = "\n".join(first for first, _ in training)
    web_seen = "\n".join(second for _, second in training)
    candidates = sample_items(load_bible_pairs(), min(30_000, max(4 * n, 1)), seed)
    kept = [(a, b) for a, b in candidates if a not in kjv_seen and b not in web_seen]
    return sample_items(kept, n, seed)


def layer_combos(poolings: Sequence[str], num_hidden_states: int) -> list[tuple[str, int]]:
    """Every (pooling, hidden-state index) pair: what one forward per text serves."""
    return [(pooling, index) for pooling in poolings for index in range(num_hidden_states)]


def encode_layers(encoder, texts: Sequence[str], combos: Sequence[tuple[str, int]], variants: Sequence[bool]) -> Grid:
    """Pooled vectors of ``texts`` for every combo and variant, one (shared-trunk) forward per text.

    Returns ``{"base"|"adapter": {(pooling, index): (texts, hidden) float32}}``.
    """
    raw = encoder.encode_grid(list(texts), list(combos), variants=tuple(variants), show_progress=True)
    return {
        VARIANT_NAMES[variant]: {(mode, int(layer)): vectors for (mode, layer), vectors in grid.items()}
        for variant, grid in raw.items()
    }


def grid_key(**identity: Any) -> str:
    """A stage file's key: the hash of everything its content depends on."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def save_stage(path: Path, key: str, grid: Grid) -> None:
    """Write ``grid`` atomically to ``path`` (npz) tagged with ``key``."""
    arrays = {f"{variant}|{mode}|{index}": v for variant, g in grid.items() for (mode, index), v in g.items()}
    buffer = io.BytesIO()
    np.savez(buffer, __key__=np.array(key), **arrays)
    with atomic_write(path, "wb") as handle:
        handle.write(buffer.getvalue())


def load_stage(path: Path, key: str) -> Grid | None:
    """The grid saved at ``path`` if it was computed for ``key``; None otherwise (or if unreadable)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["__key__"]) != key:
                return None
            grid: Grid = {}
            for name in data.files:
                if name == "__key__":
                    continue
                variant, mode, index = name.split("|")
                grid.setdefault(variant, {})[(mode, int(index))] = data[name]
    except (OSError, ValueError, KeyError) as error:
        log.warning("ignoring unreadable stage file %s (%s); recomputing", path, error)
        return None
    log.info("resumed %s", path.name)
    return grid
