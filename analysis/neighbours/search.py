"""Where a query lands: its nearest texts in each space, with the cosine in both, for highlighting on both plots."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from jaxtyping import Float

from analysis.neighbours.knn import unit_rows

__all__ = ["search"]


def search(
    queries: Mapping[str, Float[np.ndarray, " dim"]],
    spaces: Mapping[str, Float[np.ndarray, "texts dim"]],
    texts: Sequence[str],
    top: int = 10,
    labels: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """The ``top`` nearest texts of the query in each space, merged into one table.

    Args:
        queries: the query embedded with each space's settings, by side name (same names as ``spaces``).
        spaces: ``(texts, dim)`` matrices by side name, rows in ``texts`` order.

    Returns:
        One row per text in any side's top list: ``index``, ``text``, ``label``, and per side ``cos_SIDE`` and
        ``rank_SIDE`` (0 = nearest in that space); sorted by the best rank on any side, then by index.
    """
    if set(queries) != set(spaces):
        raise ValueError(f"queries for {sorted(queries)} but spaces {sorted(spaces)}; embed the query for each space.")
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}.")
    cosines, ranks = {}, {}
    for side, matrix in spaces.items():
        if len(matrix) != len(texts):
            raise ValueError(f"space {side!r} has {len(matrix)} rows for {len(texts)} texts.")
        query = unit_rows(np.asarray(queries[side], dtype=np.float32).reshape(1, -1))[0]
        cosines[side] = unit_rows(matrix) @ query
        order = np.argsort(-cosines[side], kind="stable")
        ranks[side] = np.empty(len(order), dtype=np.int64)
        ranks[side][order] = np.arange(len(order))
    listed = sorted(
        {int(i) for side in spaces for i in np.flatnonzero(ranks[side] < top)},
        key=lambda i: (min(int(ranks[s][i]) for s in spaces), i),
    )
    rows = []
    for i in listed:
        row: dict[str, Any] = {"index": i, "text": texts[i], "label": labels[i] if labels is not None else ""}
        for side in spaces:
            row[f"cos_{side}"] = round(float(cosines[side][i]), 4)
            row[f"rank_{side}"] = int(ranks[side][i])
        rows.append(row)
    return rows
