"""Cells on disk: one JSON per (row, task) under ``OUT/cells/TASK/``, named and keyed by what determines its scores.

A cell whose JSON exists with the same key is not recomputed, so an interrupted run resumes; a results folder
accumulates runs (``folder_cells``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from analysis.clustering.grid import SUBSAMPLE_SEED, TaskBudget
from core.data import Dataset
from core.encoding.methods import stored_prompt_name
from core.metrics import KMEANS_BATCH_SIZE

log = logging.getLogger(__name__)

# Bump when scoring changes, so cells scored the old way are redone.
SCORING_VERSION = 1


def cell_key(
    identity: dict[str, Any],
    prompt_template: str | None,
    pooling: str,
    layer: str,
    attention_layer: int | None,
    precision: str,
    max_length: int,
    dataset: Dataset,
    budget: TaskBudget,
    seeds: Sequence[int],
    normalize: bool,
    method_settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything that determines a cell's scores. ``method_settings`` (``Method.settings()``) is empty for plain,
    so plain cells keep the keys they had before methods existed and are not recomputed."""
    from core.encoding.encoder import ENGINE_VERSION

    return {
        **identity,
        "engine": ENGINE_VERSION,
        "scoring": SCORING_VERSION,
        "prompt": prompt_template,
        "pooling": pooling,
        "layer": layer,
        "attention_layer": attention_layer if pooling == "attention" else None,
        "precision": precision,
        "max_length": max_length,
        "dataset_sha256": dataset.sha256,
        "subsample_size": budget.size,
        "subsample_seed": SUBSAMPLE_SEED if budget.size is not None else None,
        "kmeans_seeds": list(seeds),
        "kmeans_batch_size": KMEANS_BATCH_SIZE,
        "normalize": normalize,
        **(method_settings or {}),
    }


def cell_method(cell: dict[str, Any]) -> str:
    """The cell's method spec; cells from before methods existed are plain."""
    return str(cell.get("method", "plain"))


def cell_id(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)[:60]


def cell_path(out: Path, task: str, variant: str, prompt: str, pooling: str, layer: str, key: dict[str, Any]) -> Path:
    name = f"{_slug(variant)}__{_slug(prompt)}__{pooling}__L{_slug(layer)}__{cell_id(key)}.json"
    return out / "cells" / _slug(task) / name


def _damage(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(the cell, None) if ``path`` holds a readable cell, else (None, what is wrong with it)."""
    try:
        cell = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        return None, f"not UTF-8 text (byte {error.start})"
    except ValueError as error:
        return None, f"not JSON ({error})"
    except OSError as error:
        return None, f"unreadable ({error.strerror or error})"
    if not isinstance(cell, dict) or not isinstance(cell.get("scores"), dict) or not isinstance(cell.get("key"), dict):
        return None, "not a grid cell (no key or scores)"
    return cell, None


def read_cell(path: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The stored cell if it is complete and made with this key; None means: compute it (a damaged file is named
    in a warning and then overwritten by the recomputed cell). A cell filed under another name with the same key
    (made while its form had an older name, e.g. ``eol`` for today's ``eol-noquote``) is found by the key's id."""
    if not path.exists():
        same_key = sorted(path.parent.glob(f"*__{path.name.rsplit('__', 1)[-1]}"))
        found = [cell for cell, _ in map(_damage, same_key) if cell is not None and cell["key"] == key]
        return found[0] if found else None
    cell, damage = _damage(path)
    if cell is None or cell["key"] != key:
        log.warning("grid cell %s is damaged (%s): recomputing it", path, damage or "its key is not its name's")
        return None
    return cell


def folder_cells(out: Path, run_cells: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """This run's cells plus the folder's other cells, so a results folder accumulates runs.

    A stored cell for the same row and task as one of this run's (e.g. made with other settings) is
    superseded by the run's; among stored cells the newest wins. Summaries order rows themselves
    (``summary.summary_tables``), so the order here does not matter.
    """

    def slot(cell: dict[str, Any]) -> tuple[str, ...]:
        return (
            cell["variant"],
            cell_method(cell),
            stored_prompt_name(cell["prompt"]),
            cell["pooling"],
            str(cell["layer"]),
            cell["task"]["name"],
        )

    stored: dict[tuple[str, ...], dict[str, Any]] = {}
    damaged: list[str] = []
    for path in sorted((out / "cells").glob("*/*.json")):
        cell, damage = _damage(path)
        try:
            key = slot(cell) if cell is not None else None
        except (KeyError, TypeError):
            key, damage = None, "not a grid cell (no variant, prompt, pooling, layer or task)"
        if cell is None or key is None:
            damaged.append(f"{path} ({damage})")  # never a row of the summary
            continue
        if key not in stored or cell.get("created", "") > stored[key].get("created", ""):
            stored[key] = cell
    if damaged:
        log.warning(
            "left out of the summary: %d damaged cell file(s) in %s: %s. Run the grid that made them again to "
            "recompute them, or delete them.",
            len(damaged), out / "cells", "; ".join(damaged[:3]) + (" ..." if len(damaged) > 3 else ""),
        )  # fmt: skip
    chosen = {slot(c): c for c in run_cells}
    for key, cell in stored.items():
        chosen.setdefault(key, cell)
    return list(chosen.values())
