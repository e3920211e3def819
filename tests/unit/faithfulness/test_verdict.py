"""The verdict table and method agreement on constructed records (no model needed)."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.faithfulness.verdict import method_agreement, verdict_rows

TOKENS = ["dog", "runs", "garden", "red", "dog"]  # "dog" twice: ambiguous, left out of the agreement


def record(aopcs: dict[str, float], draws: list[float], orders: dict[str, list[str]] | None = None, **extra) -> dict:
    methods = {
        m: {"aopc_deletion": v, "aopc_insertion": v / 2, "order": (orders or {}).get(m, TOKENS)}
        for m, v in aopcs.items()
    }
    methods["random"] = {
        "aopc_deletion": float(np.mean(draws)),
        "aopc_insertion": 0.01,
        "aopc_deletion_draws": draws,
        "order": TOKENS,
    }
    return {"methods": methods, **extra}


def test_methods_are_ranked_against_the_random_floor_with_its_spread():
    draws = [0.10, 0.12, 0.14, 0.16]
    curves = {
        "A": {"base": record({"attention_last": 0.13, "integrated_gradients": 0.30, "rollout": 0.05}, draws)},
        "B": {"base": record({"attention_last": 0.20, "integrated_gradients": 0.11, "rollout": 0.05}, draws)},
    }
    rows = verdict_rows(curves)
    a = [r for r in rows if r["text"] == "A"]
    assert [r["method"] for r in a] == ["integrated_gradients", "attention_last", "rollout"]
    assert [r["rank"] for r in a] == [1, 2, 3]
    best = a[0]
    assert best["random_mean"] == pytest.approx(0.13) and best["random_sd"] == pytest.approx(np.std(draws, ddof=1))
    assert best["vs_random"] == pytest.approx(0.17) and best["z"] == pytest.approx(0.17 / np.std(draws, ddof=1))
    assert best["beats"] == 1.0 and a[1]["beats"] == 0.5 and a[2]["beats"] == 0.0
    assert (best["random_min"], best["random_max"], best["draws"]) == (0.10, 0.16, 4)
    assert best["aopc_insertion_vs_random"] == pytest.approx(0.15 - 0.01)
    b = [r for r in rows if r["text"] == "B"]
    assert b[0]["method"] == "attention_last" and not any(r["method"] == "random" for r in rows)


def test_ig_over_its_tolerance_is_flagged_and_one_draw_has_no_spread():
    curves = {"A": {"base": record({"integrated_gradients": 0.3, "rollout": 0.2}, [0.1], ig_relative_delta=0.4)}}
    rows = {r["method"]: r for r in verdict_rows(curves, tolerance=0.05)}
    assert rows["integrated_gradients"]["unreliable"] and not rows["rollout"]["unreliable"]
    assert rows["rollout"]["random_sd"] is None and rows["rollout"]["z"] is None
    converged = {"A": {"base": record({"integrated_gradients": 0.3}, [0.1, 0.2], ig_relative_delta=0.01)}}
    assert not verdict_rows(converged)[0]["unreliable"]


def test_agreement_is_the_rank_correlation_of_the_orders():
    orders = {
        "same": TOKENS,
        "also_same": list(TOKENS),
        "reversed": TOKENS[::-1],
        "short": ["dog", "runs", "dog", "garden"],
    }
    agreement = method_agreement(record(dict.fromkeys(orders, 0.1), [0.1, 0.2], orders))
    methods, rho = agreement["methods"], agreement["rho"]
    assert methods == list(orders) and "random" not in methods
    at = {(a, b): rho[i][j] for i, a in enumerate(methods) for j, b in enumerate(methods)}
    assert at[("same", "also_same")] == pytest.approx(1.0)
    assert at[("same", "reversed")] == pytest.approx(-1.0) and at[("reversed", "same")] == at[("same", "reversed")]
    assert agreement["tokens"] == 3  # runs, garden, red: "dog" occurs twice
    assert at[("same", "short")] is None  # fewer than 3 shared tokens
    assert all(rho[i][i] == 1.0 for i in range(len(methods)))
