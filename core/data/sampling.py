"""Every seeded selection the project makes: samples of texts, pairs or rows, and the TREC test split.

All samples are one draw, ``random.Random(seed).sample(range(n), size)``, read in one of two orders that are
kept apart on purpose because results depend on the order:

- **mteb order** (``mteb_subsample_indices``, ``mteb_subsample``): the draw as it comes, which is exactly the
  texts *and the order* mteb's clustering task embeds with ``max_document_to_embed=size``. The local-track
  cells record samples drawn this way (their ``dataset_sha256`` hashes this order), and k-means results depend
  on the order the vectors come in, so this order must not be sorted.
- **corpus order** (``sample_indices``, ``sample_items``, ``sample_dataset``): the same draw sorted, so a sample
  reads in its source's order (training pairs and their sources, evaluation texts, attention texts, the
  cluster explorer).

For ``1 <= size < n`` both select the same items: ``sample_indices(...) == sorted(mteb_subsample_indices(...))``.
A size of ``None`` (or at least ``n``) keeps everything in the source's order. ``Random.sample`` picks positions,
not values, so sampling a list of ``n`` items is the same as sampling ``range(n)`` and indexing.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from typing import TypeVar

from core.data.dataset import Dataset, content_sha256
from core.runtime.errors import ConfigError

T = TypeVar("T")


def _draw(n: int, size: int, seed: int) -> list[int]:
    return random.Random(seed).sample(range(n), size)


def mteb_subsample_indices(n: int, size: int | None, seed: int) -> list[int]:
    """The indices mteb's clustering task embeds: ``random.Random(seed).sample(range(n), size)``, in that order.

    ``None`` (or a size >= n) keeps every text in its original order, as mteb does without a cap.
    """
    if size is None or size >= n:
        return list(range(n))
    if size < 1:
        raise ConfigError(f"subsample size must be at least 1, got {size}")
    return _draw(n, size, seed)


def mteb_subsample(dataset: Dataset, size: int | None, seed: int) -> Dataset:
    """The texts (and labels) mteb would embed with ``max_document_to_embed=size`` and this seed, in its order."""
    indices = mteb_subsample_indices(len(dataset), size, seed)
    if len(indices) == len(dataset):
        return dataset
    return _subset(dataset, indices, f"mteb-style sample of {size}, seed {seed}")


def sample_indices(n: int, size: int | None, seed: int) -> list[int]:
    """A seeded sample of ``size`` of ``range(n)`` in ascending order; all of them if ``size`` is None or >= n."""
    if size is None or size >= n:
        return list(range(n))
    if size < 0:
        raise ConfigError(f"sample size must be at least 0, got {size}")
    return sorted(_draw(n, size, seed))


def sample_items(items: Sequence[T], size: int | None, seed: int) -> list[T]:
    """A seeded sample of ``size`` items in their original order (all of them if ``size`` is None or >= len)."""
    return [items[i] for i in sample_indices(len(items), size, seed)]


def sample_dataset(dataset: Dataset, size: int | None, seed: int = 42) -> Dataset:
    """A seeded sample of ``size`` texts (with their labels) in corpus order; the dataset itself if all are kept."""
    indices = sample_indices(len(dataset), size, seed)
    if len(indices) == len(dataset):
        return dataset
    return _subset(dataset, indices, f"seeded sample of {size}, seed {seed}")


def _subset(dataset: Dataset, indices: list[int], how: str) -> Dataset:
    texts = [dataset.texts[i] for i in indices]
    labels = [dataset.labels[i] for i in indices] if dataset.labels is not None else None
    return Dataset(
        name=dataset.name,
        texts=texts,
        labels=labels,
        sha256=content_sha256(texts, labels),
        source=f"{dataset.source} ({how})",
    )


def stratified_split(labels: Sequence[str], test_fraction: float, seed: int) -> list[bool]:
    """A seeded split: in each label group, round(fraction * size) items go to test."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        groups[label].append(i)
    rng = random.Random(seed)
    is_test = [False] * len(labels)
    for label in sorted(groups):
        idx = groups[label]
        rng.shuffle(idx)
        for i in idx[: int(len(idx) * test_fraction + 0.5)]:
            is_test[i] = True
    return is_test
