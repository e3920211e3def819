"""Clustering scores, one definition for the grid, training's dev score and the pages.

The k-means is mteb's ``ClusteringEvaluator``'s: ``MiniBatchKMeans(n_clusters=k, batch_size=500,
n_init="auto", random_state=seed)`` on the raw vectors, scored by V-measure (mteb's main clustering score),
plus AMI and ARI. It lives in core, not analysis, because training's evaluation uses it and core must not
depend on analysis.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

KMEANS_BATCH_SIZE = 500  # mteb's ClusteringEvaluator default
DEFAULT_KMEANS_SEEDS = (42, 43, 44, 45, 46)  # 42 is mteb's default seed


def kmeans_labels(vectors: np.ndarray, k: int, seed: int = 42, batch_size: int = KMEANS_BATCH_SIZE) -> np.ndarray:
    """Cluster ids from mteb's evaluator's k-means for one seed; ValueError unless 2 <= k <= number of vectors."""
    from sklearn.cluster import MiniBatchKMeans
    from threadpoolctl import threadpool_limits

    if not 2 <= k <= len(vectors):
        raise ValueError(f"k={k} clusters needs 2 <= k <= {len(vectors)} (the number of texts).")
    # One thread: on a shared 2-core machine OpenMP's threads made k-means 10-50x slower; labels are identical.
    with threadpool_limits(1):
        model = MiniBatchKMeans(
            n_clusters=k, batch_size=batch_size, n_init="auto", compute_labels=True, random_state=seed
        )
        return model.fit(vectors).labels_


def score_embeddings(
    embeddings: np.ndarray,
    labels: Sequence[Any],
    seeds: Sequence[int] = DEFAULT_KMEANS_SEEDS,
    batch_size: int = KMEANS_BATCH_SIZE,
    assignments: list[np.ndarray] | None = None,
) -> dict[str, Any]:
    """V-measure, AMI and ARI: mean, std and per-seed values over k-means seeds (k = number of distinct labels).

    For each seed this is exactly mteb's ``ClusteringEvaluator``. ``assignments``, when given, receives each
    seed's cluster ids (in seed order), so uncertainty over texts reuses the k-means instead of refitting it.
    """
    from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score, v_measure_score

    if not seeds:
        raise ValueError("score_embeddings needs at least one k-means seed")
    labels = list(labels)
    k = len(set(labels))
    per_seed: dict[str, list[float]] = {"v_measure": [], "ami": [], "ari": []}
    for seed in seeds:
        predicted = kmeans_labels(embeddings, k, seed, batch_size)
        if assignments is not None:
            assignments.append(predicted)
        per_seed["v_measure"].append(float(v_measure_score(labels, predicted)))
        per_seed["ami"].append(float(adjusted_mutual_info_score(labels, predicted)))
        per_seed["ari"].append(float(adjusted_rand_score(labels, predicted)))
    scores: dict[str, Any] = {}
    for metric, values in per_seed.items():
        scores[metric] = float(np.mean(values))
        scores[f"{metric}_std"] = float(np.std(values))
        scores[f"{metric}_per_seed"] = values
    return scores
