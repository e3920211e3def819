"""c-TF-IDF cluster names, the centroid-reader seam, search over both spaces, and Procrustes-aligned layouts."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.neighbours import c_tf_idf, cluster_names, search
from analysis.projections import procrustes_align

FILLER = ["the report said", "people noted that", "we saw how", "it seems"]


def planted_corpus() -> tuple[list[str], list[str]]:
    """Three clusters, each with its own planted words among filler every cluster shares."""
    planted = {"a": ("volcano", "lava"), "b": ("violin", "orchestra"), "c": ("tax", "budget")}
    texts, clusters = [], []
    for cluster, (first, second) in planted.items():
        for n in range(12):
            extra = second if n % 2 else ""
            texts.append(f"{FILLER[n % 4]} {first} {extra} again and again")
            clusters.append(cluster)
    return texts, clusters


def test_c_tf_idf_names_the_planted_words():
    texts, clusters = planted_corpus()
    names = cluster_names(texts, clusters, top=2)
    assert [n.cluster for n in names] == ["a", "b", "c"] and [n.size for n in names] == [12, 12, 12]
    assert [set(n.words) for n in names] == [{"volcano", "lava"}, {"violin", "orchestra"}, {"tax", "budget"}]
    assert names[0].words[0] == "volcano"  # in every text of its cluster, so above "lava" (in half)
    assert names[0].lens_words is None and "lens_words" not in names[0].row()


def test_shared_words_weigh_less_than_planted_ones():
    texts, clusters = planted_corpus()
    _, vocabulary, weights = c_tf_idf(texts, clusters, stop_words=None)
    again = weights[0, vocabulary.index("again")]
    assert weights[0, vocabulary.index("volcano")] > again > 0


def test_numeric_cluster_ids_sort_by_value_and_a_wordless_corpus_names_by_id():
    ids, vocabulary, weights = c_tf_idf(["1 2", "3", "4"], [10, 2, 2])
    assert ids == ["2", "10"] and vocabulary == [] and weights.shape == (2, 0)
    assert [n.label for n in cluster_names(["1 2", "3", "4"], [10, 2, 2])] == ["2", "10"]


def test_the_centroid_reader_gets_each_cluster_mean():
    texts, clusters = planted_corpus()
    vectors = np.repeat(np.eye(3, dtype=np.float32), 12, axis=0)
    seen = []

    def reader(centroid: np.ndarray, top: int) -> list[str]:
        seen.append(centroid)
        return [f"tok{int(np.argmax(centroid))}"] * top

    names = cluster_names(texts, clusters, top=2, vectors=vectors, centroid_reader=reader)
    assert [n.lens_words for n in names] == [("tok0", "tok0"), ("tok1", "tok1"), ("tok2", "tok2")]
    np.testing.assert_allclose(seen[1], [0, 1, 0])
    assert names[2].row()["lens_words"] == "tok2, tok2"


def test_search_returns_the_planted_nearest_text_on_both_sides():
    rng = np.random.default_rng(0)
    base, other = rng.normal(size=(50, 16)), rng.normal(size=(50, 8))
    query_base, query_other = base[17] + 0.01 * rng.normal(size=16), other[31] + 0.01 * rng.normal(size=8)
    texts = [f"text {i}" for i in range(50)]
    rows = search({"base": query_base, "adapter": query_other}, {"base": base, "adapter": other}, texts, top=3)
    by_index = {row["index"]: row for row in rows}
    assert by_index[17]["rank_base"] == 0 and by_index[31]["rank_adapter"] == 0
    assert by_index[17]["cos_base"] > 0.99 and {rows[0]["index"], rows[1]["index"]} == {17, 31}
    assert all(min(r["rank_base"], r["rank_adapter"]) < 3 for r in rows) and len(rows) <= 6


def test_search_refuses_mismatched_sides():
    with pytest.raises(ValueError, match="embed the query"):
        search({"base": np.ones(3)}, {"adapter": np.ones((4, 3))}, ["a"] * 4)


def test_procrustes_undoes_rotation_mirror_scale_and_shift():
    rng = np.random.default_rng(0)
    layout = rng.normal(size=(40, 2))
    angle = 1.1
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) @ np.diag([1, -1])
    moved = 2.5 * layout @ rotation + np.array([4.0, -3.0])
    np.testing.assert_allclose(procrustes_align(layout, moved), layout, atol=1e-5)
    noisy = moved + rng.normal(size=moved.shape) * 0.05
    before = np.abs(noisy - layout).mean()
    assert np.abs(procrustes_align(layout, noisy) - layout).mean() < min(0.1, before)
