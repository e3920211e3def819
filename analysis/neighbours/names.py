"""Cluster names, offline: each cluster's most distinctive words by class-based TF-IDF over its texts.

c-TF-IDF (as in BERTopic) treats the texts of a cluster as one document: the weight of word ``t`` in cluster
``c`` is ``tf(t, c) * log(1 + A / f(t))``, with ``tf`` the word's share of the cluster's words, ``f(t)`` its count
over all clusters and ``A`` the mean number of words per cluster. Words common to every cluster score low.

For decoder models a cluster can also be read through the LM head: the vocabulary the centroid's vector maps to.
That projection belongs to the lens (``analysis.lens``); :func:`cluster_names` takes it as a ``centroid_reader``
callable and does not build one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from jaxtyping import Float

__all__ = ["CentroidReader", "ClusterName", "c_tf_idf", "cluster_names"]

# (centroid vector, how many tokens) -> the vocabulary entries it reads as, best first.
CentroidReader = Callable[[np.ndarray, int], Sequence[str]]
# Words of two or more letters (no digits or underscores), any script.
WORD_PATTERN = r"(?u)\b[^\W\d_][^\W\d_]+\b"


@dataclass(frozen=True)
class ClusterName:
    """One cluster's name parts: its id, size, top c-TF-IDF words with their weights, and (when a centroid
    reader was given) the centroid's vocabulary reading."""

    cluster: str
    size: int
    words: tuple[str, ...]
    weights: tuple[float, ...]
    lens_words: tuple[str, ...] | None = None

    @property
    def label(self) -> str:
        """A short name for the plot: the top three words, or the cluster id when it has no words."""
        return ", ".join(self.words[:3]) or self.cluster

    def row(self) -> dict[str, Any]:
        out = {
            "cluster": self.cluster,
            "size": self.size,
            "top_words": ", ".join(self.words),
            "weights": ", ".join(f"{w:.3f}" for w in self.weights),
        }
        if self.lens_words is not None:
            out["lens_words"] = ", ".join(self.lens_words)
        return out


def c_tf_idf(
    texts: Sequence[str], clusters: Sequence[Any], stop_words: str | Sequence[str] | None = "english"
) -> tuple[list[str], list[str], np.ndarray]:
    """``(cluster ids in order, vocabulary, weights (clusters x words))`` of class-based TF-IDF.

    Clusters are ordered by id (as strings, numbers first by value). A corpus with no word at all gives an
    empty vocabulary and a ``(clusters, 0)`` matrix.
    """
    from sklearn.feature_extraction.text import CountVectorizer

    if len(texts) != len(clusters):
        raise ValueError(f"{len(texts)} texts but {len(clusters)} cluster ids")
    keys = [str(c) for c in clusters]
    ids = sorted(set(keys), key=lambda c: (not c.lstrip("-").isdigit(), int(c) if c.lstrip("-").isdigit() else 0, c))
    joined = [" ".join(t for t, c in zip(texts, keys, strict=True) if c == cid) for cid in ids]
    vectorizer = CountVectorizer(token_pattern=WORD_PATTERN, stop_words=stop_words, lowercase=True)
    try:
        counts = vectorizer.fit_transform(joined).toarray().astype(np.float64)
    except ValueError:  # empty vocabulary: no words, or only stop words
        return ids, [], np.zeros((len(ids), 0))
    vocabulary = list(vectorizer.get_feature_names_out())
    totals = counts.sum(axis=1, keepdims=True)
    tf = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    average = counts.sum() / len(ids)
    idf = np.log(1.0 + average / np.maximum(counts.sum(axis=0), 1.0))
    return ids, vocabulary, tf * idf


def cluster_names(
    texts: Sequence[str],
    clusters: Sequence[Any],
    top: int = 5,
    *,
    vectors: Float[np.ndarray, "texts dim"] | None = None,
    centroid_reader: CentroidReader | None = None,
    stop_words: str | Sequence[str] | None = "english",
) -> list[ClusterName]:
    """A :class:`ClusterName` per cluster id, in id order.

    Args:
        texts, clusters: each text's cluster (k-means id or gold label).
        top: words kept per cluster (words with weight 0 are never kept).
        vectors, centroid_reader: with both, each cluster's mean vector is passed to the reader, whose ``top``
            tokens become ``lens_words`` (e.g. the lens's LM-head reading); without, ``lens_words`` is None.
    """
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}.")
    ids, vocabulary, weights = c_tf_idf(texts, clusters, stop_words)
    keys = np.array([str(c) for c in clusters])
    names = []
    for row, cid in enumerate(ids):
        order = np.argsort(-weights[row], kind="stable")[:top] if vocabulary else np.array([], dtype=int)
        order = [j for j in order if weights[row, j] > 0]
        lens = None
        if centroid_reader is not None and vectors is not None:
            centroid = np.asarray(vectors, dtype=np.float32)[keys == cid].mean(axis=0)
            lens = tuple(str(token) for token in centroid_reader(centroid, top))
        names.append(
            ClusterName(
                cid,
                int((keys == cid).sum()),
                tuple(vocabulary[j] for j in order),
                tuple(round(float(weights[row, j]), 6) for j in order),
                lens,
            )
        )
    return names
