"""How the neighbourhoods of the same texts differ between two embedding spaces.

Per text: Jaccard@k of its k nearest neighbours in space A and in space B, and the mean rank change of the
texts in either list (each one's rank among all other texts, 0 = nearest, in A and in B). Over the corpus:
means with percentile-bootstrap CIs over texts (resampled as ``analysis.stats`` does, in chunks). The spaces may
differ in width (two models); only the row order must match (text ``i`` is row ``i`` of both).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from jaxtyping import Float, Int

from analysis.neighbours.knn import BLOCK, check_k, nearest, unit_rows
from core.runtime.files import atomic_write
from core.runtime.paths import cache_root

__all__ = ["NeighbourhoodDiff", "diff_key", "movers", "neighbourhood_diff", "ranks_of"]

CACHE_VERSION = 1  # bump when what is stored changes, so old tables are recomputed rather than misread


@dataclass(frozen=True)
class NeighbourhoodDiff:
    """The neighbour lists of every text in spaces A and B and how much they agree.

    Invariants: ``before``/``after`` are ``(n, k)`` indices best first, never the text itself; ``jaccard`` is in
    [0, 1] and 1 exactly where both lists hold the same texts; ``rank_change`` is >= 0 and 0 where every listed
    text keeps its rank.
    """

    k: int
    before: Int[np.ndarray, "texts k"]
    after: Int[np.ndarray, "texts k"]
    jaccard: Float[np.ndarray, " texts"]
    rank_change: Float[np.ndarray, " texts"]

    def __len__(self) -> int:
        return len(self.jaccard)

    def summary(self, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95) -> dict[str, Any]:
        """Corpus means of Jaccard@k and rank change with percentile-bootstrap CIs over texts (both resampled
        together), medians, and how many texts kept every neighbour."""
        values = np.column_stack([self.jaccard, self.rank_change])
        means = bootstrap_means(values, n_boot, seed)
        alpha = (1.0 - confidence) / 2
        low, high = np.quantile(means, [alpha, 1 - alpha], axis=0)
        out: dict[str, Any] = {"k": self.k, "texts": len(self), "unchanged": int((self.jaccard >= 1.0).sum())}
        for column, name in enumerate(("jaccard", "rank_change")):
            out[name] = {"mean": round(float(values[:, column].mean()), 6), "ci_low": round(float(low[column]), 6),
                         "ci_high": round(float(high[column]), 6),
                         "median": round(float(np.median(values[:, column])), 6)}  # fmt: skip
        out |= {"n_boot": n_boot, "confidence": confidence}
        return out


def bootstrap_means(values: Float[np.ndarray, "texts m"], n_boot: int, seed: int = 0) -> Float[np.ndarray, "boot m"]:
    """Column means of ``n_boot`` resamples of the rows (texts) with replacement.

    The same resampling as ``analysis.stats.paired_stats``, drawn in chunks of resamples so memory stays
    ``chunk x texts`` (paired_stats holds an ``n_boot x texts`` matrix: 320 MB at 20,000 texts).
    """
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    if n < 2:
        return np.repeat(values.mean(axis=0, keepdims=True), max(n_boot, 1), axis=0)
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // n)
    parts = [values[rng.integers(0, n, size=(min(chunk, n_boot - start), n))].mean(axis=1)
             for start in range(0, n_boot, chunk)]  # fmt: skip
    return np.concatenate(parts)


def ranks_of(scores: Float[np.ndarray, "rows texts"], columns: Int[np.ndarray, "rows m"]) -> Int[np.ndarray, "rows m"]:
    """The rank (0 = most similar) of each ``columns`` entry within its row of ``scores``: how many texts of that
    row score strictly higher. ``scores`` must already exclude the row's own text (-inf)."""
    picked = np.take_along_axis(scores, columns, axis=1)
    ranks = np.empty(columns.shape, dtype=np.int64)
    for row, (values, wanted) in enumerate(zip(scores, picked, strict=True)):
        # Only scores above the lowest wanted one can outrank any of them: usually a few hundred of n.
        above = np.sort(values[values > wanted.min()])
        ranks[row] = len(above) - np.searchsorted(above, wanted, side="right")
    return ranks


def _jaccard(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    k = before.shape[1]
    shared = (before[:, :, None] == after[:, None, :]).any(axis=2).sum(axis=1)  # lists hold distinct indices
    return (shared / (2 * k - shared)).astype(np.float64)


def _rank_change(a: np.ndarray, b: np.ndarray, before: np.ndarray, after: np.ndarray, block: int) -> np.ndarray:
    """Mean |rank in A - rank in B| over the texts in either list (rank among all other texts)."""
    n = len(a)
    change = np.empty(n, dtype=np.float64)
    for start in range(0, n, block):
        stop = min(start + block, n)
        rows = np.arange(stop - start)
        union = np.concatenate([before[start:stop], after[start:stop]], axis=1)
        in_a = a[start:stop] @ a.T
        in_b = b[start:stop] @ b.T
        for scores in (in_a, in_b):
            scores[rows, np.arange(start, stop)] = -np.inf
        moved = np.abs(ranks_of(in_a, union) - ranks_of(in_b, union)).astype(np.float64)
        # A text in both lists appears twice in the union: count it once.
        duplicate = (union[:, :, None] == union[:, None, :]) & np.tri(union.shape[1], k=-1, dtype=bool).T[None]
        once = ~duplicate.any(axis=1)
        change[start:stop] = (moved * once).sum(axis=1) / once.sum(axis=1)
    return change


def diff_key(a: np.ndarray, b: np.ndarray, k: int) -> str:
    """The cache key of a diff: both matrices' bytes and shapes, ``k`` and the format version."""
    digest = hashlib.sha256()
    for matrix in (a, b):
        array = np.ascontiguousarray(matrix, dtype=np.float32)
        digest.update(json.dumps(array.shape).encode())
        digest.update(array.tobytes())
    digest.update(json.dumps({"k": k, "version": CACHE_VERSION}).encode())
    return digest.hexdigest()[:24]


def _load(path: Path, n: int, k: int) -> NeighbourhoodDiff | None:
    try:
        with np.load(path, allow_pickle=False) as stored:
            diff = NeighbourhoodDiff(k, *(stored[name] for name in ("before", "after", "jaccard", "rank_change")))
    except (OSError, ValueError, KeyError):
        return None  # unreadable: recompute and replace
    return diff if diff.before.shape == (n, k) and diff.jaccard.shape == (n,) else None


def _save(path: Path, diff: NeighbourhoodDiff) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, before=diff.before, after=diff.after, jaccard=diff.jaccard, rank_change=diff.rank_change)
    with atomic_write(path, "wb") as handle:
        handle.write(buffer.getvalue())


def neighbourhood_diff(
    a: Float[np.ndarray, "texts dim_a"],
    b: Float[np.ndarray, "texts dim_b"],
    k: int = 10,
    *,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    block: int = BLOCK,
) -> NeighbourhoodDiff:
    """Neighbour lists and their agreement for the same texts embedded twice (row ``i`` = text ``i`` in both).

    Served from the disk cache (``CACHE/neighbours/KEY.npz``, keyed by both matrices and ``k``) when computed before.
    Raises ValueError when the row counts differ or ``k`` does not fit the corpus.
    """
    if len(a) != len(b):
        raise ValueError(f"the two spaces hold {len(a)} and {len(b)} texts; compare embeddings of the same texts.")
    check_k(k, len(a))
    folder = Path(cache_dir) if cache_dir is not None else cache_root() / "neighbours"
    path = folder / f"{diff_key(a, b, k)}.npz"
    if use_cache and path.is_file() and (cached := _load(path, len(a), k)) is not None:
        return cached
    unit_a, unit_b = unit_rows(a), unit_rows(b)
    before, _ = nearest(unit_a, k, block=block)
    after, _ = nearest(unit_b, k, block=block)
    diff = NeighbourhoodDiff(
        k, before, after, _jaccard(before, after), _rank_change(unit_a, unit_b, before, after, block)
    )
    if use_cache:
        folder.mkdir(parents=True, exist_ok=True)
        _save(path, diff)
    return diff


def movers(
    diff: NeighbourhoodDiff,
    texts: Sequence[str],
    labels: Sequence[str] | None = None,
    top: int = 50,
    shown: int = 5,
) -> list[dict[str, Any]]:
    """The texts whose neighbourhoods changed most: lowest Jaccard first, then the largest rank change.

    Only texts that lost at least one neighbour are listed, so identical spaces give no movers. Each row names the
    text, its label, the ``shown`` nearest texts before and after, and the neighbours lost and gained.
    """
    changed = np.flatnonzero(diff.jaccard < 1.0)
    order = changed[np.lexsort((changed, -diff.rank_change[changed], diff.jaccard[changed]))][:top]

    def named(indices: Sequence[int]) -> str:
        return " | ".join(texts[int(j)] for j in indices)

    rows = []
    for i in order:
        before, after = diff.before[i], diff.after[i]
        lost = [j for j in before if j not in set(after)]
        gained = [j for j in after if j not in set(before)]
        rows.append(
            {
                "index": int(i),
                "text": texts[i],
                "label": labels[i] if labels is not None else "",
                "jaccard": round(float(diff.jaccard[i]), 4),
                "rank_change": round(float(diff.rank_change[i]), 2),
                "before": named(before[:shown]),
                "after": named(after[:shown]),
                "lost": named(lost),
                "gained": named(gained),
            }
        )
    return rows
