"""Neighbour lists and the neighbourhood diff: brute force agreement, identical and rotated spaces, the cache."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from analysis.neighbours import movers, nearest, neighbourhood_diff
from analysis.neighbours.diff import diff_key


@pytest.fixture(scope="module")
def space() -> np.ndarray:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 24)) * 3
    return np.concatenate([c + rng.normal(size=(60, 24)) for c in centres]).astype(np.float32)


def brute_force(vectors: np.ndarray, k: int) -> np.ndarray:
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    scores = unit.astype(np.float64) @ unit.T.astype(np.float64)
    np.fill_diagonal(scores, -np.inf)
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def brute_diff(a: np.ndarray, b: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Jaccard and mean |rank change| over the union of both lists, one text at a time."""
    ranks = []
    for matrix in (a, b):
        unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
        scores = unit.astype(np.float64) @ unit.T.astype(np.float64)
        np.fill_diagonal(scores, -np.inf)
        ranks.append(np.argsort(np.argsort(-scores, axis=1, kind="stable"), axis=1))
    before, after = brute_force(a, k), brute_force(b, k)
    jaccard, change = [], []
    for i in range(len(a)):
        union = sorted(set(before[i]) | set(after[i]))
        jaccard.append(len(set(before[i]) & set(after[i])) / len(union))
        change.append(np.mean([abs(int(ranks[0][i, j]) - int(ranks[1][i, j])) for j in union]))
    return np.array(jaccard), np.array(change)


def test_nearest_matches_brute_force_in_small_blocks(space):
    indices, cosines = nearest(space, 7, block=33)  # blocks that do not divide the corpus
    np.testing.assert_array_equal(indices, brute_force(space, 7))
    assert (np.diff(cosines, axis=1) <= 1e-6).all() and not (indices == np.arange(len(space))[:, None]).any()


def test_ties_go_to_the_smaller_index():
    points = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    indices, _ = nearest(points, 2)
    assert indices.tolist()[:4] == [[1, 2], [0, 2], [0, 1], [0, 1]]


def test_diff_matches_brute_force_on_a_perturbed_space(space, tmp_path):
    other = space + np.random.default_rng(1).normal(size=space.shape).astype(np.float32) * 0.8
    diff = neighbourhood_diff(space, other, 8, cache_dir=tmp_path, block=50)
    jaccard, change = brute_diff(space, other, 8)
    np.testing.assert_allclose(diff.jaccard, jaccard)
    np.testing.assert_allclose(diff.rank_change, change)
    assert 0.0 < diff.jaccard.mean() < 1.0


def test_identical_spaces_overlap_fully_and_have_no_movers(space, tmp_path):
    diff = neighbourhood_diff(space, space.copy(), 10, cache_dir=tmp_path)
    assert (diff.jaccard == 1.0).all() and (diff.rank_change == 0.0).all()
    assert movers(diff, [f"t{i}" for i in range(len(space))]) == []
    summary = diff.summary(n_boot=200)
    assert summary["jaccard"]["mean"] == summary["jaccard"]["ci_low"] == 1.0 and summary["unchanged"] == len(space)


def test_an_orthogonally_rotated_space_overlaps_fully(space, tmp_path):
    rotation, _ = np.linalg.qr(np.random.default_rng(2).normal(size=(24, 24)))
    diff = neighbourhood_diff(space, (space @ rotation).astype(np.float32) * 3.0, 10, cache_dir=tmp_path)
    assert (diff.jaccard == 1.0).all() and (diff.rank_change == 0.0).all()


def test_movers_come_lowest_overlap_first_with_their_neighbours(space, tmp_path):
    other = space.copy()
    other[5] = -space[5] * 4  # one text flung to the other side
    texts = [f"t{i}" for i in range(len(space))]
    diff = neighbourhood_diff(space, other, 5, cache_dir=tmp_path)
    rows = movers(diff, texts, ["x"] * len(texts), top=3)
    assert rows[0]["index"] == 5 and rows[0]["jaccard"] == 0.0 and rows[0]["label"] == "x"
    assert rows[0]["before"].split(" | ") == [texts[j] for j in diff.before[5]]
    assert rows[0]["lost"] == rows[0]["before"] and len(rows) <= 3
    assert all(r["jaccard"] <= s["jaccard"] for r, s in itertools.pairwise(rows))


def test_the_diff_is_cached_by_content_and_k(space, tmp_path, monkeypatch):
    other = space[::-1].copy()
    first = neighbourhood_diff(space, other, 6, cache_dir=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [f"{diff_key(space, other, 6)}.npz"]
    import analysis.neighbours.diff as module

    monkeypatch.setattr(module, "nearest", None)  # a cache hit computes nothing
    again = neighbourhood_diff(space, other, 6, cache_dir=tmp_path)
    np.testing.assert_array_equal(first.after, again.after)
    assert diff_key(space, other, 7) != diff_key(space, other, 6) != diff_key(other, space, 6)
    (tmp_path / f"{diff_key(space, other, 6)}.npz").write_bytes(b"broken")
    monkeypatch.undo()
    assert neighbourhood_diff(space, other, 6, cache_dir=tmp_path).jaccard.shape == (len(space),)


def test_bad_inputs_are_clear_errors(space, tmp_path):
    with pytest.raises(ValueError, match="same texts"):
        neighbourhood_diff(space, space[:-1], 5, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="lower k"):
        neighbourhood_diff(space[:5], space[:5], 5, cache_dir=tmp_path)


def test_the_chunked_bootstrap_agrees_with_analysis_stats():
    from analysis.neighbours.diff import bootstrap_means
    from analysis.stats import paired_stats

    values = np.random.default_rng(3).exponential(size=(400, 1))
    means = bootstrap_means(values, 2000, seed=1)
    reference = paired_stats(values[:, 0], n_boot=2000, seed=1)
    low, high = np.quantile(means[:, 0], [0.025, 0.975])
    spread = float(reference.high - reference.low)
    assert abs(low - float(reference.low)) < 0.1 * spread and abs(high - float(reference.high)) < 0.1 * spread
    assert means.shape == (2000, 1) and low < values.mean() < high
