"""core.pairs.quality: each filter, centred similarities, hard negatives, the report and its Markdown."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from core.models.adapters import render_pair_report
from core.pairs import quality as Q


def vector_embed(table: dict[str, list[float]]):
    """An embed function over fixed vectors, so similarity filters are tested exactly."""
    return lambda texts: np.asarray([table[t] for t in texts], dtype=np.float32)


def test_language_heuristic():
    assert Q.is_english("The cat sat on the mat.")
    assert Q.is_english("Hello there")  # short texts need no function word
    assert not Q.is_english("Der Hund läuft schnell über die Straße")  # no English function word
    assert not Q.is_english("Собака быстро бежит по улице")
    assert not Q.is_english("1234 !!!")


@pytest.mark.parametrize(
    ("anchor", "positive", "verdict"),
    [
        ("The dog runs in the park every morning.", "Der Hund läuft jeden Morgen im Park.", "language"),
        ("The dog runs in the park every morning.", "Dog runs.", "length_ratio"),
        ("The dog runs.", "Every single morning the dog goes out and runs around the big green park.", "length_ratio"),
        ("The dog runs in the park every morning.", "The dog runs in the park every single morning.", "copy_rate"),
        ("The dog runs in the park every morning.", "the dog runs in the park, every morning!!", "copy_rate"),
        ("The dog runs in the park every morning.", "Each morning, the hound jogs through the park.", None),
    ],
)
def test_surface_filters(anchor, positive, verdict):
    assert Q.surface_verdict(anchor, positive) == verdict


def test_overlap_and_edit_similarity_measures():
    assert Q.token_overlap("a b c", "A, b; c!") == 1.0
    assert Q.token_overlap("a b", "c d") == 0.0
    assert Q.edit_similarity("same text", "Same text.") == 1.0
    assert Q.edit_similarity("abc", "xyz") < 0.1


PAIRS = [
    {"anchor": "The cat sleeps on the warm sofa.", "positive": "A cat is napping on the cosy couch."},
    {"anchor": "Stocks fell sharply on Monday.", "positive": "My grandmother knits blue scarves."},
    {"anchor": "It rained all day in the city.", "positive": "All day it rained in town, without a break."},
    {"anchor": "He bought bread and milk.", "positive": "Bread and milk were what he purchased."},
    {"anchor": "Der Hund schläft im Garten.", "positive": "The dog sleeps in the garden."},
]
# Raw vectors share a big common component (as decoder embeddings do); only centring separates them.
TABLE = {
    PAIRS[0]["anchor"]: [10, 1, 0, 0],
    PAIRS[0]["positive"]: [10, 0.6, 0.6, 0],
    PAIRS[1]["anchor"]: [10, 0, 1, 0],
    PAIRS[1]["positive"]: [10, 0, -1, 0],
    PAIRS[2]["anchor"]: [10, -1, 0, 0],
    PAIRS[2]["positive"]: [10, -1, 0, 0.0001],
    PAIRS[3]["anchor"]: [10, 0, 0, 1],
    PAIRS[3]["positive"]: [10, 0.2, 0, 0.8],
}


def test_filter_pairs_counts_each_filter_and_adds_similarity():
    kept, dropped, stats = Q.filter_pairs(PAIRS, Q.FilterConfig(), vector_embed(TABLE))
    assert dropped == Counter({"language": 1, "similarity_floor": 1, "similarity_ceiling": 1})
    assert [p["anchor"] for p in kept] == [PAIRS[0]["anchor"], PAIRS[3]["anchor"]]
    assert all(0.3 <= p["similarity"] <= 0.95 for p in kept)
    assert stats["kept"]["min"] >= 0.3 and stats["before_filter"]["max"] > 0.95
    # Raw cosines would all be near 1: centring is what makes the floor and ceiling meaningful.
    raw = np.asarray([TABLE[PAIRS[1]["anchor"]], TABLE[PAIRS[1]["positive"]]], dtype=float)
    assert raw[0] @ raw[1] / np.linalg.norm(raw[0]) / np.linalg.norm(raw[1]) > 0.98


def test_filter_pairs_without_encoder_skips_similarity():
    kept, dropped, stats = Q.filter_pairs(PAIRS, Q.FilterConfig())
    assert len(kept) == 4 and dropped == Counter({"language": 1}) and "skipped" in stats["similarity"]


def test_similarity_filter_runs_on_the_tiny_encoder(tiny_encoder):
    embed = lambda texts: tiny_encoder.encode(list(texts))  # noqa: E731
    sims, anchors, _ = Q.pair_similarities(PAIRS[:4], embed)
    assert sims.shape == (4,) and np.allclose(np.linalg.norm(anchors, axis=1), 1, atol=1e-5)
    kept, dropped, _ = Q.filter_pairs(PAIRS[:4], Q.FilterConfig(min_similarity=-1.0, max_similarity=1.0), embed)
    assert len(kept) == 4 and not dropped


def test_hard_negatives_take_the_most_similar_other_positive_within_bounds():
    pairs = [{"anchor": f"a{i}", "positive": f"p{i}"} for i in range(4)]
    table = {
        "a0": [1, 0, 0], "p0": [1, 0.1, 0],
        "a1": [0, 1, 0], "p1": [0, 1, 0.1],
        "a2": [0.7, 0.7, 0], "p2": [-1, -1, 0],
        "a3": [0, 0, 1], "p3": [0, 0, -1],
    }  # fmt: skip
    embed = lambda texts: np.asarray([table[t] for t in texts], dtype=float) + 5.0  # noqa: E731
    out, mined = Q.mine_hard_negatives(pairs, embed, floor=0.2, ceiling=0.95)
    assert out[2]["negative"] in ("p0", "p1")  # a2 lies between p0 and p1
    assert all(p.get("negative") != p["positive"] for p in out)
    assert mined == sum("negative" in p for p in out) and mined >= 1
    strict, none = Q.mine_hard_negatives(pairs, embed, floor=0.99, ceiling=1.0)
    assert none == 0 and all("negative" not in p for p in strict)


def test_hard_negative_is_never_a_copy_of_the_pair():
    pairs = [
        {"anchor": "x", "positive": "same"},
        {"anchor": "y", "positive": "Same!"},
        {"anchor": "z", "positive": "q"},
    ]
    table = {"x": [1, 0], "same": [1, 0.1], "Same!": [1, 0.1], "y": [0.9, 0.2], "z": [-1, 0], "q": [-1, 0.1]}
    out, _ = Q.mine_hard_negatives(pairs, lambda t: np.asarray([table[s] for s in t], dtype=float), -1.0, 1.0)
    assert out[0].get("negative") != "Same!" and out[1].get("negative") != "same"


def test_report_counts_keep_rates_examples_and_markdown():
    kept = [{"anchor": f"anchor {i}", "positive": f"positive | {i}", "similarity": 0.5} for i in range(30)]
    sources = [{"source": "quotes", "package": "inspirational-quotes", "version": "2.0.1", "registry": "npm",
                "licence": "MIT", "texts": 321}]  # fmt: skip
    report = Q.pair_report(
        n_sources=50,
        generation_drops=Counter({"refusal": 4}),
        filter_drops=Counter({"language": 2, "length_ratio": 4, "similarity_ceiling": 10}),
        kept=kept,
        sources=sources,
        config=Q.FilterConfig(),
        similarity_stats={
            "similarity": "centred cosine",
            "kept": {"min": 0.3, "p10": 0.4, "median": 0.5, "p90": 0.8, "max": 0.9},
        },
        generator={"model": "smollm2-135m", "decoding": "greedy"},
        seed=1,
    )
    json.dumps(report)
    steps = {s["filter"]: s for s in report["counts"]["steps"]}
    assert steps["generation:refusal"]["dropped"] == 4
    assert steps["language"]["seen"] == 46 and steps["length_ratio"]["seen"] == 44
    assert steps["similarity_ceiling"]["keep_rate"] == pytest.approx(1 - 10 / 40)
    assert 46 - 2 - 4 - 10 == report["counts"]["kept"] == 30
    assert len(report["examples"]) == 20 and len({e["anchor"] for e in report["examples"]}) == 20
    assert (
        report["examples"]
        == Q.pair_report(
            n_sources=50, generation_drops=Counter(), filter_drops=Counter(), kept=kept, sources=[], config=None, seed=1
        )["examples"]
    )
    markdown = render_pair_report(report)
    assert "| quotes | inspirational-quotes (npm) | 2.0.1 | MIT | 321 |" in markdown
    assert "| similarity_ceiling | 10 | 75% |" in markdown
    assert "positive \\| " in markdown  # table cells escape pipes
    assert markdown.count("| anchor | positive |") == 1 and markdown.count("\n| anchor ") == 21
