"""Geometry measures against hand computations and their invariances."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from analysis.lens.geometry import (
    alignment,
    anisotropy,
    bootstrap_difference,
    effective_rank,
    linear_cka,
    pc_share,
    uniformity,
)


@pytest.fixture()
def space():
    rng = np.random.default_rng(0)
    return rng.normal(size=(60, 12)) @ rng.normal(size=(12, 12))


def test_cka_of_a_space_with_itself_and_rotated_is_one(space):
    rotation, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(12, 12)))
    assert linear_cka(space, space) == pytest.approx(1.0, abs=1e-9)
    assert linear_cka(space, space @ rotation) == pytest.approx(1.0, abs=1e-9)
    assert linear_cka(space, 3.5 * space @ rotation) == pytest.approx(1.0, abs=1e-9)
    other = np.random.default_rng(2).normal(size=space.shape)
    assert linear_cka(space, other) < 0.5


def test_cka_equals_the_feature_space_formula(space):
    other = space[:, :5] ** 2 + np.random.default_rng(3).normal(size=(60, 5))
    x, y = space - space.mean(0), other - other.mean(0)
    hand = np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))
    assert linear_cka(space, other) == pytest.approx(hand, rel=1e-9)


def _unit(v):
    return v / np.linalg.norm(v)


def test_alignment_and_uniformity_against_loops():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(9, 5)), rng.normal(size=(9, 5))
    hand_alignment = np.mean([np.linalg.norm(_unit(x) - _unit(y)) ** 2 for x, y in zip(a, b, strict=True)])
    assert alignment(a, b) == pytest.approx(hand_alignment)
    pairs = itertools.combinations(range(9), 2)
    hand_uniformity = np.log(np.mean([np.exp(-2 * np.linalg.norm(_unit(a[i]) - _unit(a[j])) ** 2) for i, j in pairs]))
    assert uniformity(a) == pytest.approx(hand_uniformity)


def test_anisotropy_is_the_mean_cosine_of_distinct_pairs():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(8, 4)) + 1.0
    cosines = [_unit(x[i]) @ _unit(x[j]) for i, j in itertools.permutations(range(8), 2)]
    assert anisotropy(x) == pytest.approx(np.mean(cosines))
    # Bootstrap weights: a text drawn twice counts as two texts, its copies not paired with each other.
    weights = np.array([2, 1, 0, 1, 1, 1, 1, 1])
    copies = np.repeat(x, weights, axis=0)
    groups = np.repeat(np.arange(8), weights)
    pairs = [(i, j) for i, j in itertools.permutations(range(len(copies)), 2) if groups[i] != groups[j]]
    assert anisotropy(x, weights) == pytest.approx(np.mean([_unit(copies[i]) @ _unit(copies[j]) for i, j in pairs]))


def test_effective_rank_and_pc_share_bounds():
    rng = np.random.default_rng(6)
    line = np.outer(rng.normal(size=50), rng.normal(size=6))
    assert effective_rank(line) == pytest.approx(1.0, abs=1e-6)
    assert pc_share(line) == pytest.approx(1.0)
    iso = rng.normal(size=(4000, 6))
    assert effective_rank(iso) == pytest.approx(6.0, rel=0.02)
    assert pc_share(iso) == pytest.approx(1 / 6, rel=0.15)


def test_bootstrap_difference_is_paired():
    rng = np.random.default_rng(7)
    values = rng.normal(size=100)
    shifted = values + 0.5

    def stat(index, adapter):
        return float((shifted if adapter else values)[index].mean())

    result = bootstrap_difference(stat, 100, n_boot=50)
    # Paired: every resample's difference is exactly 0.5, so the CI collapses onto it.
    assert result["difference"]["ci_low"] == pytest.approx(0.5) == result["difference"]["ci_high"]
    assert result["base"]["ci_low"] < result["base"]["value"] < result["base"]["ci_high"]


def test_recentred_interval_holds_the_value_of_a_duplicate_biased_statistic():
    x = np.random.default_rng(8).normal(size=(40, 30))

    def stat(index, adapter):
        return effective_rank(x[index] * (2.0 if adapter else 1.0) + (0.5 * x[index] ** 2 if adapter else 0.0))

    plain = bootstrap_difference(stat, 40, n_boot=30)
    fixed = bootstrap_difference(stat, 40, n_boot=30, recentre=True)
    # Resamples repeat texts, which lowers the effective rank: the plain interval misses the value.
    assert plain["base"]["ci_high"] < plain["base"]["value"]
    for side in ("base", "adapter", "difference"):
        assert fixed[side]["ci_low"] <= fixed[side]["value"] <= fixed[side]["ci_high"]
