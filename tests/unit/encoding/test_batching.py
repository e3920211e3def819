"""Batch grouping: the least-padding grouping of a prefix-reusing wave against every grouping."""

from __future__ import annotations

import random
from itertools import pairwise

import pytest

from core.encoding.batching import least_padding_batches


def cheapest(widths: list[int], batch_tokens: int, max_rows: int, call_tokens: int) -> int:
    """The least total of ``rows x width + call_tokens`` over every cut of the longest-first order."""
    ordered = sorted(widths, reverse=True)
    best = None
    for mask in range(1 << (len(ordered) - 1)):
        cuts = [0, *(i + 1 for i in range(len(ordered) - 1) if mask >> i & 1), len(ordered)]
        groups = list(pairwise(cuts))
        if any(b - a > max_rows or (b - a > 1 and (b - a) * ordered[a] > batch_tokens) for a, b in groups):
            continue
        cost = sum(call_tokens + (b - a) * ordered[a] for a, b in groups)
        best = cost if best is None else min(best, cost)
    assert best is not None
    return best


@pytest.mark.parametrize("seed", range(40))
def test_least_padding_batches_is_the_cheapest_grouping_within_the_budget(seed):
    rng = random.Random(seed)
    widths = [rng.randint(1, 12) for _ in range(rng.randint(1, 10))]
    budget, max_rows, call = rng.randint(5, 60), rng.randint(1, 6), rng.randint(0, 20)
    groups = least_padding_batches(widths, budget, max_rows, call)
    assert sorted(i for group in groups for i in group) == list(range(len(widths)))
    for group in groups:
        width = max(widths[i] for i in group)
        assert len(group) <= max_rows and (len(group) == 1 or len(group) * width <= budget)
    assert sum(call + len(g) * max(widths[i] for i in g) for g in groups) == cheapest(widths, budget, max_rows, call)


def test_a_free_call_cuts_at_every_width_and_a_dear_one_fills_batches():
    widths = [3, 5, 5, 3, 4]
    assert sorted(sorted(g) for g in least_padding_batches(widths, 100, 10, 0)) == [[0, 3], [1, 2], [4]]
    assert least_padding_batches(widths, 100, 10, 1000) == [[1, 2, 4, 0, 3]]
