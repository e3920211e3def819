"""Exact cosine nearest neighbours, computed in row blocks so memory stays ``block x n`` at any corpus size.

Ties are broken by the smaller text index, so two runs over the same matrix give the same lists.
"""

from __future__ import annotations

import numpy as np
from jaxtyping import Float, Int

__all__ = ["BLOCK", "check_k", "nearest", "unit_rows"]

BLOCK = 512  # rows of the similarity matrix held at once: 512 x 20,000 float32 is 40 MB


def unit_rows(vectors: Float[np.ndarray, "texts dim"]) -> Float[np.ndarray, "texts dim"]:
    """Rows scaled to length 1 (float32); an all-zero row stays zero, so its cosine with anything is 0."""
    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.ndim != 2:
        raise ValueError(f"expected a (texts, dim) matrix, got shape {matrix.shape}")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)


def check_k(k: int, n: int) -> None:
    """A ValueError naming the fix when ``k`` neighbours cannot be taken among ``n`` texts (self excluded)."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}.")
    if k > n - 1:
        raise ValueError(f"k={k} neighbours need at least {k + 1} texts, got {n}; lower k or add texts.")


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of each row's ``k`` largest scores, best first, ties to the smaller index."""
    part = (
        np.argpartition(-scores, k - 1, axis=1)[:, :k]
        if k < scores.shape[1]
        else np.tile(np.arange(scores.shape[1]), (len(scores), 1))
    )
    picked = np.take_along_axis(scores, part, axis=1)
    # Rows whose k-th score ties with scores left outside the partition: redo them exactly with a stable sort.
    kth = picked.min(axis=1, keepdims=True)
    outside_ties = (scores >= kth).sum(axis=1) > k
    order = np.lexsort((part, -picked), axis=1)
    result = np.take_along_axis(part, order, axis=1)
    for row in np.flatnonzero(outside_ties):
        result[row] = np.argsort(-scores[row], kind="stable")[:k]
    return result


def nearest(
    vectors: Float[np.ndarray, "texts dim"], k: int, *, block: int = BLOCK
) -> tuple[Int[np.ndarray, "texts k"], Float[np.ndarray, "texts k"]]:
    """Each text's ``k`` nearest other texts by cosine.

    Returns:
        ``(indices, cosines)``, both ``(texts, k)``, best first; a text is never its own neighbour
        (a duplicate text is another index and can be).
    """
    unit = unit_rows(vectors)
    n = len(unit)
    check_k(k, n)
    indices = np.empty((n, k), dtype=np.int32)
    cosines = np.empty((n, k), dtype=np.float32)
    for start in range(0, n, block):
        stop = min(start + block, n)
        scores = unit[start:stop] @ unit.T
        scores[np.arange(stop - start), np.arange(start, stop)] = -np.inf  # never oneself
        top = _top_k(scores, k)
        indices[start:stop] = top
        cosines[start:stop] = np.take_along_axis(scores, top, axis=1)
    return indices, cosines
