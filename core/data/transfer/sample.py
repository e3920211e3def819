"""Deduplication and the seeded, label-balanced subsample of a transfer set."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence

from core.data.transfer.parsers import one_line

__all__ = ["balanced_sample", "dedupe_labelled"]


def dedupe_labelled(texts: Sequence[str], labels: Sequence[str]) -> tuple[list[str], list[str], dict[str, int]]:
    """One copy of each text (compared case- and space-insensitively); texts seen with two labels are dropped."""
    seen: dict[str, set[str]] = defaultdict(set)
    first: dict[str, int] = {}
    for i, (text, label) in enumerate(zip(texts, labels, strict=True)):
        key = one_line(text).casefold()
        seen[key].add(label)
        first.setdefault(key, i)
    keep = sorted(i for key, i in first.items() if len(seen[key]) == 1)
    stats = {
        "duplicates_dropped": len(texts) - len(first),
        "ambiguous_dropped": sum(1 for labs in seen.values() if len(labs) > 1),
    }
    return [texts[i] for i in keep], [labels[i] for i in keep], stats


def balanced_sample(labels: Sequence[str], n: int, seed: int) -> list[int]:
    """``n`` indices drawn round-robin over labels (each label's order seeded), in a seeded order.

    Labels with fewer than their share give all their items; the rest is filled from larger labels.
    """
    groups: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        groups[label].append(i)
    rng = random.Random(seed)
    order = sorted(groups)
    for label in order:
        rng.shuffle(groups[label])
    n = min(n, len(labels))
    picked: list[int] = []
    depth = 0
    while len(picked) < n:
        for label in order:
            if depth < len(groups[label]) and len(picked) < n:
                picked.append(groups[label][depth])
        depth += 1
    rng.shuffle(picked)
    return picked
