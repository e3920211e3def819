"""core.data.sampling: the seeded samples select exactly what the committed results and pairs were built from."""

from __future__ import annotations

import hashlib
import random
from collections import Counter

import pytest

from core.data import Dataset, content_sha256
from core.data.sampling import (
    mteb_subsample,
    mteb_subsample_indices,
    sample_dataset,
    sample_indices,
    sample_items,
    stratified_split,
)
from core.runtime.errors import ConfigError


def _digest(indices: list[int]) -> str:
    return hashlib.sha256(",".join(map(str, indices)).encode()).hexdigest()[:16]


# Recorded with the code before the samplers were unified (n = the real task sizes, as prepared from the pinned
# wheels). A change here changes which texts the committed results, the shipped adapter's pairs or the attention
# report were computed on.
COMMITTED_MTEB = [  # results/local-track: TASK_BUDGETS sizes, seed 42 (20ng-s2s, 20ng-p2p, r8, r52 test splits)
    (7528, 1200, 42, "c7fe4935acfb5045", [5238, 912, 204]),
    (7528, 256, 42, "951f1e2ee698a775", [5238, 912, 204]),
    (2189, 384, 42, "27844612fbe25a0d", [456, 102, 1126]),
    (2568, 384, 42, "5df148da87cb57f6", [456, 102, 1126]),
]
COMMITTED_CORPUS_ORDER = [
    (30805, 1200, 0, "3257e44761700147"),  # Makefile pairs: bible --n 1200 (load_bible_pairs, seed 0)
    (11273, 700, 0, "fb2fa7aca2f8d12f"),  # crop 20ng-p2p --n 700 (unique train texts)
    (6450, 700, 0, "af6c6e84f40b52ec"),  # crop r52 --n 700
    (3762, 400, 0, "85281d58040321f3"),  # augment trec-fine --n 400
    (10353, 400, 0, "97910385bbc3ed74"),  # augment 20ng-s2s --n 400
    (1619, 500, 0, "2466b69fee0ebbef"),  # results/attention: 500 trec-fine test texts, seed 0
]


@pytest.mark.parametrize(("n", "size", "seed", "digest", "head"), COMMITTED_MTEB)
def test_mteb_order_selects_the_committed_local_track_samples(n, size, seed, digest, head):
    indices = mteb_subsample_indices(n, size, seed)
    assert _digest(indices) == digest and indices[:3] == head
    assert indices != sorted(indices)  # mteb's draw order, not corpus order


@pytest.mark.parametrize(("n", "size", "seed", "digest"), COMMITTED_CORPUS_ORDER)
def test_corpus_order_selects_the_committed_pairs_and_attention_texts(n, size, seed, digest):
    indices = sample_indices(n, size, seed)
    assert _digest(indices) == digest and indices == sorted(indices) and len(set(indices)) == size


def test_the_two_orders_select_the_same_items():
    for n, size, seed in ((7528, 1200, 42), (100, 1, 0), (10, 9, 3)):
        assert sample_indices(n, size, seed) == sorted(mteb_subsample_indices(n, size, seed))


def test_sampling_items_is_sampling_their_positions():
    words = [f"w{i}" for i in range(50)]
    assert sample_items(words, 7, 5) == [words[i] for i in sample_indices(50, 7, 5)]
    # Random.sample draws positions, so a list of indices samples like range(n): train.py's eval subset.
    assert sorted(random.Random(5).sample(list(range(50)), 7)) == sample_indices(50, 7, 5)
    assert sample_items(words, 7, 5) != sample_items(words, 7, 6)


def test_no_cap_or_a_cap_over_the_size_keeps_everything_in_order():
    for size in (None, 10, 11):
        assert mteb_subsample_indices(10, size, 1) == sample_indices(10, size, 1) == list(range(10))
    assert sample_items("abc", None, 0) == ["a", "b", "c"]


def test_sizes_below_the_minimum_are_config_errors():
    assert sample_indices(10, 0, 1) == [] and sample_items([1, 2], 0, 0) == []
    with pytest.raises(ConfigError, match="at least 0, got -1"):
        sample_indices(10, -1, 1)
    with pytest.raises(ConfigError, match="at least 1, got 0"):  # mteb refuses an empty sample
        mteb_subsample_indices(10, 0, 1)


def _dataset(n: int) -> Dataset:
    texts, labels = [f"text {i}" for i in range(n)], [f"l{i % 3}" for i in range(n)]
    return Dataset("d", texts, labels, content_sha256(texts, labels), "src")


def test_dataset_samples_keep_labels_with_texts_and_say_how_they_were_drawn():
    ds = _dataset(30)
    mteb = mteb_subsample(ds, 8, 42)
    assert mteb.texts == [ds.texts[i] for i in mteb_subsample_indices(30, 8, 42)]
    assert mteb.labels == [ds.labels[i] for i in mteb_subsample_indices(30, 8, 42)]
    assert mteb.sha256 == content_sha256(mteb.texts, mteb.labels)
    assert mteb.source == "src (mteb-style sample of 8, seed 42)"  # recorded in the local-track cells
    corpus = sample_dataset(ds, 8, 42)
    assert corpus.texts == sorted(mteb.texts, key=ds.texts.index) and corpus.labels == [
        ds.labels[ds.texts.index(t)] for t in corpus.texts
    ]
    assert corpus.source == "src (seeded sample of 8, seed 42)"
    assert mteb_subsample(ds, None, 42) is ds and sample_dataset(ds, 30) is ds


def test_stratified_split_is_seeded_and_stratified():
    labels = ["a"] * 10 + ["b"] * 20 + ["c"]
    split = stratified_split(labels, 0.3, seed=1)
    assert split == stratified_split(labels, 0.3, seed=1)
    assert split != stratified_split(labels, 0.3, seed=2)
    counts = Counter(lab for lab, t in zip(labels, split, strict=True) if t)
    assert counts == {"a": 3, "b": 6}
