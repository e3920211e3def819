"""Cleaning training pairs before contrastive training, and the fingerprint a resume checks them by."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["PairCleanup", "clean_pairs", "pairs_fingerprint"]


@dataclass
class PairCleanup:
    """What :func:`clean_pairs` dropped."""

    duplicates: int = 0  # exact repeats of an earlier (anchor, positive)
    identical: int = 0  # anchor == positive in a pair that is not a SimCSE dropout view

    def describe(self) -> str:
        return f"{self.duplicates} duplicate pair(s) and {self.identical} pair(s) whose anchor equals the positive"


def clean_pairs(pairs: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], PairCleanup]:
    """Pairs without repeats, and without anchor == positive unless ``method`` is ``dropout``; first ones kept.

    A repeated pair in one batch puts its positive among its own negatives, and a batch of one pair
    repeated has a loss fixed at ln(batch) that teaches nothing. An anchor equal to its positive is a
    trivial positive, except for SimCSE dropout views, where the noise of two passes is the point.

    Args:
        pairs: dicts with ``anchor`` and ``positive`` (other keys are kept as they are).

    Returns:
        The kept pairs in their order, and the counts of what was dropped.
    """
    seen: set[tuple[str, str]] = set()
    kept, dropped = [], PairCleanup()
    for pair in pairs:
        key = (pair["anchor"], pair["positive"])
        if key in seen:
            dropped.duplicates += 1
            continue
        seen.add(key)
        if pair["anchor"] == pair["positive"] and pair.get("method") != "dropout":
            dropped.identical += 1
        else:
            kept.append(pair)
    return kept, dropped


def pairs_fingerprint(pairs: Sequence[dict[str, Any]]) -> str:
    """SHA-256 of the training pairs themselves (after sampling and cleaning), in training order; a pair's hard
    negative counts where it has one. Equal fingerprints mean a resume trains on the very same texts."""
    texts = [[pair["anchor"], pair["positive"], *([pair["negative"]] if "negative" in pair else [])] for pair in pairs]
    return hashlib.sha256(json.dumps(texts, ensure_ascii=False).encode()).hexdigest()
