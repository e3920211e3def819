"""The checks that make a task clusterable (the seeded samples themselves live in ``core.data.sampling``)."""

from __future__ import annotations

from collections.abc import Sequence


def check_clusterable(name: str, labels: Sequence[str] | None, n_texts: int) -> int:
    """The number of clusters; ValueError unless there are labels, at least 2 of them, and enough texts."""
    if labels is None:
        raise ValueError(f"Dataset {name!r} has no labels, so it cannot be a clustering task.")
    n_labels = len(set(labels))
    if n_labels < 2:
        raise ValueError(f"Dataset {name!r} has {n_labels} label; clustering needs at least 2.")
    if n_texts < n_labels:
        raise ValueError(f"Dataset {name!r} has fewer texts ({n_texts}) than clusters ({n_labels}).")
    return n_labels
