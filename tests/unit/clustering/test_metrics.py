"""The one clustering scorer: k-means labels as mteb's evaluator makes them, V-measure/AMI/ARI over seeds."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import v_measure_score

from core.metrics import kmeans_labels, score_embeddings


@pytest.fixture(scope="module")
def blobs() -> np.ndarray:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 5
    return np.concatenate([c + rng.normal(size=(20, 16)) for c in centres]).astype(np.float32)


def test_kmeans_finds_the_blobs(blobs):
    assert v_measure_score(np.repeat([0, 1, 2], 20), kmeans_labels(blobs, 3)) == pytest.approx(1.0)


def test_kmeans_needs_a_sensible_k(blobs):
    with pytest.raises(ValueError, match=r"k=1 clusters needs 2 <= k <= 60"):
        kmeans_labels(blobs, 1)
    with pytest.raises(ValueError, match=r"k=61 clusters"):
        kmeans_labels(blobs, 61)


def test_scores_are_the_per_seed_kmeans_scores(blobs):
    rng = np.random.default_rng(1)
    noisy = blobs + rng.normal(size=blobs.shape).astype(np.float32) * 4
    labels = [str(i) for i in np.repeat([0, 1, 2], 20)]
    scores = score_embeddings(noisy, labels, seeds=(1, 2, 3))
    expected = [v_measure_score(labels, kmeans_labels(noisy, 3, seed)) for seed in (1, 2, 3)]
    assert scores["v_measure_per_seed"] == pytest.approx(expected, abs=1e-12)
    assert scores["v_measure"] == pytest.approx(np.mean(expected)) and scores["v_measure_std"] == pytest.approx(
        np.std(expected)
    )
    assert set(scores) >= {"ami", "ami_std", "ari", "ari_per_seed"}
    assert score_embeddings(blobs, labels, seeds=(5,))["v_measure"] == pytest.approx(1.0)
