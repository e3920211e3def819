"""The pooled token's content share at the pooled layers (the Attention page's numbers), on constructed captures."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.attention import CapturedCorpus, pooled_share, pooled_share_summary, sentence_pooled_shares
from analysis.categories import CATEGORIES, TextAttention
from core.runtime.errors import ConfigError

ROLES = [CATEGORIES.index(name) for name in ("sink", "content", "function", "content")]


def corpus(content_mass: list[float], layers: int = 3, heads: int = 2, use_adapter: bool = False) -> CapturedCorpus:
    """One text per entry: in every layer but the first, the pooled token puts ``mass`` on the two content tokens
    (split evenly), 0.5 on the sink, the rest on the function word; layer 0 looks only at the sink."""
    items = []
    for mass in content_mass:
        rows = np.zeros((layers, heads, 4))
        rows[0, :, 0] = 1.0
        rows[1:, :, :] = [0.5, mass / 2, 0.5 - mass, mass / 2]
        items.append(TextAttention(["<s>", "cat", "the", "dog"], np.array(ROLES), rows))
    texts = [f"text {i}" for i in range(len(content_mass))]
    return CapturedCorpus(
        texts, items, np.zeros((len(texts), 2)), use_adapter, "rows", "last", list(range(layers)), 0.0, 4
    )


def test_pooled_share_averages_the_pooled_layers_raw_and_renormalised():
    captured = corpus([0.2, 0.4])
    assert pooled_share(captured, [1, 2], renormalise=False) == pytest.approx([0.2, 0.4])
    assert pooled_share(captured, [1, 2], renormalise=True) == pytest.approx([0.4, 0.8])  # sink left out
    assert pooled_share(captured, [0, 1], renormalise=False) == pytest.approx([0.1, 0.2])  # layer 0: sink only
    with pytest.raises(ConfigError, match="layer 0 pools"):
        pooled_share(captured, [])
    with pytest.raises(ConfigError, match="within the 3 captured layers"):
        pooled_share(captured, [3])


def test_the_summary_gives_base_adapter_and_a_paired_difference_with_cis():
    rng = np.random.default_rng(0)
    base_mass = rng.uniform(0.1, 0.3, 40)
    base = corpus(list(base_mass))
    adapter = corpus(list(base_mass + 0.1), use_adapter=True)  # every text gains 0.1 raw content share
    rows = {row["side"]: row for row in pooled_share_summary(base, adapter, [2], renormalise=False)}
    assert rows["base"]["share"] == pytest.approx(base_mass.mean())
    difference = rows["adapter − base"]
    assert difference["share"] == pytest.approx(0.1) and difference["n"] == 40
    assert difference["ci_high"] - difference["ci_low"] < 1e-9  # paired: the same gain on every text, no spread
    assert rows["base"]["ci_low"] < rows["base"]["share"] < rows["base"]["ci_high"]  # texts differ: a real CI
    with pytest.raises(ConfigError, match="same texts"):
        pooled_share_summary(base, corpus([0.2]), [1])


def test_one_sentence_gives_values_without_a_ci():
    shares = {"base": np.array([[0.0] * len(CATEGORIES)] * 3), "adapter": np.array([[0.0] * len(CATEGORIES)] * 3)}
    shares["base"][:, CATEGORIES.index("content")] = [0.9, 0.2, 0.4]
    shares["adapter"][:, CATEGORIES.index("content")] = [0.9, 0.5, 0.7]
    rows = {row["side"]: row for row in sentence_pooled_shares(shares, [1, 2])}
    assert rows["base"]["share"] == pytest.approx(0.3) and rows["adapter"]["share"] == pytest.approx(0.6)
    assert rows["adapter − base"]["share"] == pytest.approx(0.3) and rows["base"]["n"] == 1
    assert math.isnan(rows["base"]["ci_low"])
    assert [row["side"] for row in sentence_pooled_shares({"base": shares["base"]}, [2])] == ["base"]
