"""Cosine similarity of a few texts (the Embed & compare page): matrices and the within/between-label answer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def cosine_matrix(vectors: np.ndarray) -> np.ndarray:
    """Texts x texts cosine similarity (rows are L2-normalised here, so any vectors will do)."""
    vectors = np.asarray(vectors, dtype=np.float64)
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return unit @ unit.T


def label_cosines(similarity: np.ndarray, labels: Sequence[Any]) -> dict[str, float]:
    """Mean cosine of pairs with the same label (``within``) and with different labels (``between``), and the gap.

    Diagonal pairs (a text with itself) are left out. A side with no pair (every label distinct, or a single
    label) is NaN, and so is the gap.
    """
    matrix = np.asarray(similarity, dtype=np.float64)
    labels = [str(label) for label in labels]
    if matrix.shape != (len(labels), len(labels)):
        raise ValueError(f"similarity is {matrix.shape} but there are {len(labels)} labels: one label per text.")
    names = np.array(labels, dtype=object)
    same = names[:, None] == names[None, :]
    off_diagonal = ~np.eye(len(labels), dtype=bool)
    within_pairs, between_pairs = matrix[same & off_diagonal], matrix[~same]
    within = float(within_pairs.mean()) if within_pairs.size else float("nan")
    between = float(between_pairs.mean()) if between_pairs.size else float("nan")
    return {"within": within, "between": between, "gap": within - between}
