"""Which texts of a task the grid embeds: mteb's seeded subsample, and the checks that make a task clusterable."""

from __future__ import annotations

import random
from collections.abc import Sequence

from core.data import Dataset, content_sha256


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


def mteb_subsample_indices(n: int, size: int | None, seed: int) -> list[int]:
    """The indices mteb's clustering task embeds: ``random.Random(seed).sample(range(n), size)``, in that order.

    ``None`` (or a size >= n) keeps every text in its original order, as mteb does without a cap.
    """
    if size is None or size >= n:
        return list(range(n))
    if size < 1:
        raise ValueError(f"subsample size must be at least 1, got {size}")
    return random.Random(seed).sample(range(n), k=size)


def subsample(dataset: Dataset, size: int | None, seed: int) -> Dataset:
    """The texts (and labels) mteb would embed with ``max_document_to_embed=size`` and this seed."""
    indices = mteb_subsample_indices(len(dataset), size, seed)
    if len(indices) == len(dataset):
        return dataset
    texts = [dataset.texts[i] for i in indices]
    labels = [dataset.labels[i] for i in indices] if dataset.labels is not None else None
    return Dataset(
        name=dataset.name,
        texts=texts,
        labels=labels,
        sha256=content_sha256(texts, labels),
        source=f"{dataset.source} (mteb-style sample of {size}, seed {seed})",
    )
