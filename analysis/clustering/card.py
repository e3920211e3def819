"""An adapter's card gets clustering scores only from a full track, labelled with the track, date and commit.

A grid on any other task set (a CSV, one local task, a capped sample) never touches the card: the card's
numbers must mean the same thing for every adapter. The row written is the adapter's own (its trained
prompt, pooling and layer), beside the best prompt-only base row and the MiniLM baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from analysis.clustering.grid import BASELINE_MODEL, ModelSpec, Variant, expand_task_specs
from analysis.clustering.summary import METHOD_INDEX, cell_row, index_columns, summary_tables, task_columns
from core.data import LOCAL_TASKS, TRANSFER_TASKS

# The task sets whose scores an adapter card holds, as the card key ``{name}_track``.
TRACKS: dict[str, tuple[str, ...]] = {"local": tuple(LOCAL_TASKS), "transfer": tuple(TRANSFER_TASKS)}


def card_tracks(tasks: Sequence[str], max_texts: int | None = None, max_length: int | None = None) -> list[str]:
    """The tracks a run covers whole (every task, at its own budget): only those scores may enter a card."""
    if max_texts is not None or max_length is not None:
        return []  # a capped sample or other max length is not the track as published
    names = set(expand_task_specs(tasks))
    return [track for track, track_tasks in TRACKS.items() if set(track_tasks) <= names]


def record_adapter_scores(
    spec: ModelSpec, cells: Sequence[dict[str, Any]], out: Path, track: str = "local"
) -> dict[str, Any] | None:
    """Write the track's rows into the adapter's card when the adapter row, a base row and MiniLM have every
    task of the track; None (card untouched) otherwise."""
    from core.encoding.prompts import PROMPTS
    from core.models.adapters import read_metadata, record_scores

    track_tasks = TRACKS[track]
    cells = [c for c in cells if c["task"]["name"] in track_tasks]
    if not cells:
        return None
    meta = read_metadata(spec.adapter) if spec.adapter else {}
    scores, _ = summary_tables(cells)
    tasks = task_columns(scores)
    if set(tasks) != set(track_tasks):
        return None
    complete = scores.dropna()
    with_method = index_columns(scores) is METHOD_INDEX
    if with_method:  # the card compares prompt-only rows: plain method (the adapter was trained plain)
        complete = complete[complete.index.get_level_values("method") == "plain"]
    base_label = Variant(spec, False).label
    adapter_label = Variant(spec, True).label
    names = [name for name, template in PROMPTS.items() if template == meta.get("prompt")]
    method = ("plain",) if with_method else ()
    own = (
        adapter_label,
        *method,
        names[0] if names else "custom",
        meta.get("pooling", "last"),
        str(meta.get("layer", "-1")),
    )
    base = complete[complete.index.get_level_values("variant") == base_label]
    baseline = complete[complete.index.get_level_values("variant") == BASELINE_MODEL]
    if own not in complete.index or base.empty or baseline.empty:
        return None
    picked = [("adapter", own), ("best prompt-only base", base["average"].idxmax()), ("MiniLM", baseline.index[0])]
    rows = [
        {
            "label": f"{role}: {key[0]}, prompt {key[-3]}, {key[-2]} pooling, layer {key[-1]}",
            "scores": {t: round(float(complete.loc[key, t]), 4) for t in tasks},
            "average": round(float(complete.loc[key, "average"]), 4),
        }
        for role, key in picked
    ]
    used = [c for c in cells if cell_row(c, with_method) in dict(picked).values()]
    newest = max(used, key=lambda c: c.get("created", ""))
    entry = {
        "track": track,
        "tasks": tasks,
        "rows": rows,
        "results": str(out),
        "date": newest.get("created", "")[:10] or None,
        "commit": newest.get("git_commit"),
        "dirty": any(bool(c.get("git_dirty")) for c in used),
    }
    record_scores(spec.adapter, entry)
    return entry
