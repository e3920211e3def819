"""Uncertainty over texts for one cell (one row's embeddings of one task): bootstrap replicates that resample the
texts, so a reader sees how much a score would move on another sample of the same kind of texts.

Statistics (each with replicates from :func:`analysis.stats.text_resamples`):

- ``v_measure``: mean over k-means seeds of V-measure. k-means is fitted once per seed on all texts; a replicate
  scores the resampled texts' (label, cluster) pairs, so the interval is the texts' spread, the seed spread is the
  cell's ``v_measure_std``.
- ``gap``: per text, mean cosine to the texts of its label minus mean cosine to the other labels' texts, averaged
  over texts. It is in the model's own cosine units: a model whose cosines are all high has small gaps, so raw
  gaps do not compare across models.
- ``gap_z``: the gap divided by the standard deviation of all pair cosines (invariant to a linear rescale).
- ``auc``: per text, the share of (same-label text, other-label text) pairs in which the same-label text is the
  closer (ties half), averaged over texts. Rank-based: invariant to any increasing rescale of the cosines, so it
  compares across models (0.5 = labels invisible in the geometry, 1 = every text nearer its own label).

The pair statistics are computed per text once against all texts; a replicate averages the texts it drew.
Replicates use a fixed seed and depend only on the number of texts, so two cells of the same sample (base and
adapter) pair replicate by replicate: the paired difference's CI is the CI of the replicates' difference.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from jaxtyping import Float

from analysis.stats import mean_ci, rounded, text_resamples
from core.runtime.errors import ConfigError

__all__ = [
    "BOOT_SEED",
    "MAX_PAIR_TEXTS",
    "N_BOOT",
    "UNCERTAINTY_VERSION",
    "cosine_gaps",
    "per_text_gaps",
    "silhouette_ci",
    "text_uncertainty",
    "v_measure_from_table",
    "v_measure_replicates",
]

UNCERTAINTY_VERSION = 1
N_BOOT = 200  # replicates stored per cell: enough for a 95% percentile interval at two decimals of V-measure
BOOT_SEED = 0
MAX_PAIR_TEXTS = 5000  # pair statistics hold a texts x texts matrix: above this many texts they are not computed
SILHOUETTE_TEXTS = 4000  # the silhouette of more texts is the silhouette of a seeded sample of this many


def _entropy(counts: np.ndarray, axis: int) -> np.ndarray:
    total = counts.sum(axis, keepdims=True)
    p = np.divide(counts, total, out=np.zeros_like(counts), where=total > 0)
    return -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis)


def v_measure_from_table(table: Float[np.ndarray, "... labels clusters"]) -> np.ndarray:
    """V-measure of (weighted) contingency tables, as sklearn's ``v_measure_score`` (beta 1) computes it from labels.

    Args:
        table: counts of texts per (gold label, cluster); leading axes are independent tables.
    Returns:
        V-measure per table (1.0 where both labelings are a single class, as sklearn).
    """
    table = np.asarray(table, dtype=np.float64)
    n = table.sum((-2, -1))
    classes, clusters = table.sum(-1), table.sum(-2)
    h_class, h_cluster = _entropy(classes, -1), _entropy(clusters, -1)
    safe_n = np.where(n > 0, n, 1.0)[..., None, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        joint = table / safe_n
        log_joint = np.log(np.where(table > 0, table, 1.0))
        cond_class = -(joint * (log_joint - np.log(np.where(clusters > 0, clusters, 1.0))[..., None, :])).sum((-2, -1))
        cond_cluster = -(joint * (log_joint - np.log(np.where(classes > 0, classes, 1.0))[..., :, None])).sum((-2, -1))
        homogeneity = np.where(h_class > 0, 1.0 - cond_class / np.where(h_class > 0, h_class, 1.0), 1.0)
        completeness = np.where(h_cluster > 0, 1.0 - cond_cluster / np.where(h_cluster > 0, h_cluster, 1.0), 1.0)
        total = homogeneity + completeness
        return np.where(total > 0, 2 * homogeneity * completeness / np.where(total > 0, total, 1.0), 0.0)


def _codes(values: Sequence[Any]) -> tuple[np.ndarray, int]:
    _, codes = np.unique(np.asarray([str(v) for v in values]), return_inverse=True)
    return codes.reshape(-1), int(codes.max()) + 1


def v_measure_replicates(
    labels: Sequence[Any], assignments: Sequence[Sequence[int]], counts: np.ndarray
) -> Float[np.ndarray, " n_boot"]:
    """Per resample (a row of ``counts``), the mean over k-means seeds of V-measure of the resampled texts.

    Args:
        labels: gold label per text.
        assignments: one cluster id per text for each k-means seed (fitted on all texts).
        counts: (n_boot, texts) draw counts, from :func:`analysis.stats.text_resamples`.
    """
    gold, n_gold = _codes(labels)
    out = np.zeros(len(counts), dtype=np.float64)
    weights = np.asarray(counts, dtype=np.float64)
    for clusters in assignments:
        found, n_found = _codes(clusters)
        if len(found) != len(gold) or weights.shape[1] != len(gold):
            raise ConfigError(f"{len(gold)} labels, {len(found)} cluster ids and {weights.shape[1]} draw counts: "
                              "give one of each per text.")  # fmt: skip
        cell = gold * n_found + found
        tables = np.zeros((len(weights), n_gold * n_found), dtype=np.float64)
        for column in np.unique(cell):  # texts sharing a (label, cluster) add up their draws
            tables[:, column] = weights[:, cell == column].sum(1)
        out += v_measure_from_table(tables.reshape(len(weights), n_gold, n_found))
    return out / len(assignments)


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float64)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def per_text_gaps(
    vectors: Float[np.ndarray, "texts dim"] | None,
    labels: Sequence[Any],
    similarity: Float[np.ndarray, "texts texts"] | None = None,
) -> tuple[dict[str, np.ndarray], float]:
    """Each text's ``gap`` (mean similarity to its label's other texts minus mean similarity to other labels'
    texts) and rank ``auc`` (the share of (same-label, other-label) text pairs where the same-label text is the
    closer, ties half), and the standard deviation of all pair similarities. NaN for a text alone in its label.

    Args:
        vectors: texts' embeddings (cosine similarity), or None with ``similarity``.
        labels: one gold label per text.
        similarity: a symmetric texts x texts similarity to use instead of the vectors' cosines.
    Raises:
        ConfigError for more than ``MAX_PAIR_TEXTS`` texts, fewer than 3, a label count that does not match, or
        labels that leave no same-label or no different-label pair.
    """
    from scipy.stats import rankdata

    if similarity is None:
        unit = _unit(vectors)  # type: ignore[arg-type]
        similarity = unit @ unit.T
    cos = np.array(similarity, dtype=np.float64)
    n = len(cos)
    if len(labels) != n:
        raise ConfigError(f"{n} texts but {len(labels)} labels: give one label per text.")
    if not 3 <= n <= MAX_PAIR_TEXTS:
        raise ConfigError(f"Pair statistics take 3 to {MAX_PAIR_TEXTS} texts, got {n}; use a sample.")
    gold, _ = _codes(labels)
    same = gold[:, None] == gold[None, :]
    np.fill_diagonal(same, False)
    n_within = same.sum(1).astype(np.float64)
    n_between = (n - 1) - n_within
    if not n_within.any() or not n_between.any():
        raise ConfigError("The cosine gap needs two texts with one label and two texts with different labels.")
    np.fill_diagonal(cos, -np.inf)  # ranks first in its row, then left out below
    ranks = rankdata(cos, axis=1) - 1.0  # average ranks among the other texts, 1-based
    np.fill_diagonal(cos, 0.0)
    off_sum = cos.sum(1)
    within_sum = (cos * same).sum(1)
    defined = (n_within > 0) & (n_between > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        gap = np.where(defined, within_sum / n_within - (off_sum - within_sum) / n_between, np.nan)
        rank_sum = (ranks * same).sum(1)
        auc = np.where(defined, (rank_sum - n_within * (n_within + 1) / 2) / (n_within * n_between), np.nan)
    upper = np.triu_indices(n, 1)
    return {"gap": gap, "auc": auc}, float(cos[upper].std())


def cosine_gaps(
    vectors: Float[np.ndarray, "texts dim"] | None,
    labels: Sequence[Any],
    counts: np.ndarray | None = None,
    similarity: Float[np.ndarray, "texts texts"] | None = None,
) -> dict[str, dict[str, Any]]:
    """The mean over texts of the per-text ``gap``, ``gap_z`` (gap / sd of all pair cosines) and ``auc``
    (:func:`per_text_gaps`), each as ``{"value": float, "n": texts with a value, "replicates": [...]}``.

    Each text's value is computed once against all texts; a replicate (a row of ``counts``) averages the texts
    it drew. Replicates only when ``counts`` is given. ConfigErrors as :func:`per_text_gaps`.
    """
    values, spread = per_text_gaps(vectors, labels, similarity)
    values["gap_z"] = values["gap"] / spread if spread > 1e-12 else np.full(len(values["gap"]), np.nan)
    out = {}
    for name in ("gap", "gap_z", "auc"):
        series = values[name]
        valid = ~np.isnan(series)
        entry: dict[str, Any] = {"value": float(series[valid].mean()), "n": int(valid.sum())}
        if counts is not None:
            draws = np.asarray(counts, dtype=np.float64)
            entry["replicates"] = rounded((draws @ np.where(valid, series, 0.0)) / (draws @ valid), 6)
        out[name] = entry
    return out


def text_uncertainty(
    vectors: Float[np.ndarray, "texts dim"],
    labels: Sequence[Any],
    seeds: Sequence[int],
    n_boot: int = N_BOOT,
    seed: int = BOOT_SEED,
    assignments: Sequence[Sequence[int]] | None = None,
) -> dict[str, Any]:
    """What a grid cell stores to give its scores CIs over texts and to pair with other rows on the same texts.

    ``assignments``: each seed's k-means cluster ids as the cell's scoring made them (``score_embeddings``'s
    ``assignments``); without them k-means is fitted again per seed (``core.metrics.kmeans_labels``). Returns a
    JSON-ready dict: ``version``, ``n`` (texts), ``n_boot``, ``boot_seed``, ``v_measure`` (replicates) and, where
    the texts allow pair statistics, ``gap``/``gap_z``/``auc`` (``{"value", "n", "replicates"}``); else
    ``pairs_skipped`` says why.
    """
    from core.metrics import kmeans_labels

    labels = list(labels)
    k = len(set(labels))
    counts = text_resamples(len(labels), n_boot, seed)
    if assignments is None:
        assignments = [kmeans_labels(np.asarray(vectors), k, s) for s in seeds]
    out: dict[str, Any] = {
        "version": UNCERTAINTY_VERSION,
        "n": len(labels),
        "n_boot": n_boot,
        "boot_seed": seed,
        "v_measure": rounded(v_measure_replicates(labels, assignments, counts), 6),
    }
    try:
        out |= cosine_gaps(vectors, labels, counts)
    except ConfigError as error:
        out["pairs_skipped"] = str(error)
    return out


def silhouette_ci(
    vectors: Float[np.ndarray, "texts dim"],
    clusters: Sequence[Any],
    n_boot: int = 2000,
    seed: int = 0,
    max_texts: int = SILHOUETTE_TEXTS,
) -> dict[str, Any]:
    """Mean cosine silhouette of ``clusters`` with a bootstrap CI over texts: needs no gold labels.

    Each text's silhouette is computed once against all (sampled) texts; the bootstrap resamples which texts are
    averaged. Above ``max_texts`` texts, a seeded sample of ``max_texts`` is scored. Returns
    ``{mean, ci_low, ci_high, n, n_boot, of}`` (``of``: the texts there were). ConfigError for fewer than 2
    clusters or a cluster count not below the number of texts.
    """
    from sklearn.metrics import silhouette_samples

    data = np.asarray(vectors, dtype=np.float64)
    found, n_found = _codes(clusters)
    if len(found) != len(data):
        raise ConfigError(f"{len(data)} vectors but {len(found)} cluster ids: give one cluster per text.")
    if not 2 <= n_found < len(data):
        raise ConfigError(f"A silhouette needs 2 to {len(data) - 1} clusters, got {n_found}.")
    chosen = np.arange(len(data))
    if len(data) > max_texts:
        chosen = np.sort(np.random.default_rng(seed).choice(len(data), max_texts, replace=False))
    if len(set(found[chosen])) < 2:
        raise ConfigError("The sampled texts fall in one cluster: a silhouette needs two.")
    values = silhouette_samples(data[chosen], found[chosen], metric="cosine")
    return {**mean_ci(values, n_boot, seed=seed), "of": len(data)}
