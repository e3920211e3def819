"""Statistics of the curves: AOPC, bootstrap means and CIs, per-method summaries, adapter minus base.

AOPC (area over the perturbation curve, Samek et al. 2017): deletion, the mean over k = 1..K of the
distance from the original (higher: the ranking finds the tokens that matter first); insertion, the mean
over k of how far the distance fell from the all-removed start (higher: putting the top tokens back
restores the vector faster). A text with fewer than K content tokens has a truncated curve (its AOPC
averages the steps it has).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from analysis.faithfulness.config import MEASURES, FaithfulnessConfig
from analysis.stats import paired_stats
from core.runtime.errors import ConfigError

__all__ = ["adapter_minus_base", "aopc", "ig_convergence", "mean_ci", "mean_curve", "summarise"]


def aopc(curve: Sequence[float], kind: Literal["deletion", "insertion"]) -> float:
    """Area over the perturbation curve of ``curve`` = [value at k=0, k=1, ...], averaged over k >= 1.

    Deletion: the mean distance from the original after each removal (``curve[0]`` is the original, 0).
    Insertion: the mean fall of the distance from the all-removed start ``curve[0]``.
    """
    values = np.asarray(curve, dtype=np.float64)
    if len(values) < 2:
        raise ConfigError("A perturbation curve needs the start and at least one step.")
    steps = values[1:]
    return float((steps - values[0]).mean() if kind == "deletion" else (values[0] - steps).mean())


def mean_ci(values: np.ndarray, config: FaithfulnessConfig) -> dict[str, Any]:
    stats = paired_stats(values, config.bootstrap, seed=config.seed)
    return {
        "mean": round(float(stats.mean), 6),
        "ci_low": round(float(stats.low), 6),
        "ci_high": round(float(stats.high), 6),
    }


def mean_curve(curves: Sequence[Sequence[float]], k: int, config: FaithfulnessConfig) -> dict[str, Any]:
    """Mean curve over texts at each step, over the texts whose curve reaches it (counts given)."""
    out: dict[str, list[Any]] = {"mean": [], "ci_low": [], "ci_high": [], "n": []}
    for step in range(k + 1):
        values = np.array([c[step] for c in curves if len(c) > step])
        out["n"].append(len(values))
        if len(values) >= 2:
            cell = mean_ci(values, config)
        else:
            cell = {"mean": round(float(values.mean()), 6) if len(values) else None, "ci_low": None, "ci_high": None}
        for name in ("mean", "ci_low", "ci_high"):
            out[name].append(cell[name])
    return out


def summarise(records: Sequence[dict[str, Any]], config: FaithfulnessConfig) -> dict[str, Any]:
    """Per method: AOPC means with CIs, mean curves; paired differences; the most faithful method.

    A method is summarised over the texts it ran on (integrated gradients: ``ig_texts`` per task), a difference
    between two methods over the texts both ran on (``n`` given); a method with fewer than two texts is left out.
    The most faithful method is the best of those that ran on every text.
    """
    measured = {m: [r for r in records if m in r["methods"]] for m in config.methods}
    methods = [m for m in config.methods if len(measured[m]) >= 2]

    def aopc(method: str, measure: str, among: Sequence[dict[str, Any]]) -> np.ndarray:
        return np.array([r["methods"][method][f"aopc_{measure}"] for r in among])

    def both(a: str, b: str) -> list[dict[str, Any]]:
        return [r for r in records if a in r["methods"] and b in r["methods"]]

    out: dict[str, Any] = {"n_texts": len(records), "methods": {}, "paired_differences": {}, "most_faithful": {}}
    for method in methods:
        own = measured[method]
        entry: dict[str, Any] = {"n_texts": len(own)}
        entry |= {f"aopc_{m}": mean_ci(aopc(method, m, own), config) for m in MEASURES}
        entry["curves"] = {
            m: mean_curve([r["methods"][method]["curves"][m] for r in own], config.k, config) for m in MEASURES
        }
        if method == "random":
            draws = np.array([r["methods"]["random"]["aopc_deletion_draws"] for r in own])
            entry["random_spread"] = {
                "aopc_deletion_per_draw": np.round(draws.mean(0), 6).tolist(),
                "sd_between_draws": round(float(draws.mean(0).std(ddof=1)), 6) if draws.shape[1] > 1 else None,
                "sd_over_texts": round(float(draws.mean(1).std(ddof=1)), 6),
            }
        out["methods"][method] = entry
    for measure in ("deletion", "insertion"):
        differences = {}
        for i, a in enumerate(methods):
            for b in methods[i + 1 :]:
                common = both(a, b)
                stats = paired_stats(
                    aopc(a, measure, common) - aopc(b, measure, common), config.bootstrap, seed=config.seed
                )
                differences[f"{a} - {b}"] = {
                    "mean": round(float(stats.mean), 6),
                    "ci_low": round(float(stats.low), 6),
                    "ci_high": round(float(stats.high), 6),
                    "cohens_d": round(float(stats.cohens_d), 4),
                    "n": len(common),
                }
        out["paired_differences"][measure] = differences
        # Means over different texts do not compare: the methods that ran on every text are ranked, and one that
        # ran on a subset (integrated gradients, ``ig_texts``) is compared through its paired differences.
        ranked_methods = [m for m in methods if len(measured[m]) == len(records)] or methods
        means = np.array([aopc(m, measure, measured[m]).mean() for m in ranked_methods])
        order = np.argsort(-means)
        best = ranked_methods[order[0]]
        runner = ranked_methods[order[1]] if len(ranked_methods) > 1 else None
        verdict: dict[str, Any] = {"method": best, "aopc": round(float(means[order[0]]), 6)}
        verdict["not_ranked"] = [m for m in methods if m not in ranked_methods]  # subsets: see paired differences
        if runner is not None:
            common = both(best, runner)
            gap = aopc(best, measure, common) - aopc(runner, measure, common)
            stats = paired_stats(gap, config.bootstrap, seed=config.seed)
            verdict.update(
                runner_up=runner,
                margin=round(float(stats.mean), 6),
                margin_ci=[round(float(stats.low), 6), round(float(stats.high), 6)],
                separated=bool(stats.low > 0),
            )
        out["most_faithful"][measure] = verdict
    return out


def ig_convergence(records: Sequence[dict[str, Any]], config: FaithfulnessConfig) -> dict[str, Any]:
    """Distribution of integrated gradients' relative completeness errors and of the steps they took."""
    deltas = np.array([r["ig_relative_delta"] for r in records])
    steps = np.array([r.get("ig_steps", config.ig_steps) for r in records])
    quantiles = (0.5, 0.9, 0.99)
    return {
        "tolerance": config.ig_tolerance,
        "relative_delta": {
            **{f"q{round(q * 100)}": round(float(np.quantile(deltas, q)), 4) for q in quantiles},
            "max": round(float(deltas.max()), 4),
            "n_above_tolerance": int((deltas > config.ig_tolerance).sum()),
        },
        "steps": {
            "mean": round(float(steps.mean()), 1),
            **{f"q{round(q * 100)}": int(np.quantile(steps, q)) for q in quantiles},
            "max": int(steps.max()),
            "counts": {str(k): int(v) for k, v in zip(*np.unique(steps, return_counts=True), strict=True)},
        },
    }


def adapter_minus_base(
    runs: dict[str, list[dict[str, Any]]], method: str, measure: str, config: FaithfulnessConfig
) -> dict[str, Any]:
    """Adapter minus base AOPC of ``method`` over the texts it ran on in both settings."""

    def values(records: list[dict[str, Any]]) -> dict[str, float]:
        return {r["key"]: r["methods"][method][f"aopc_{measure}"] for r in records if method in r["methods"]}

    base, adapter = values(runs["base"]), values(runs["adapter"])
    diffs = np.array([adapter[k] - base[k] for k in base if k in adapter])
    return {**mean_ci(diffs, config), "n": len(diffs)} if len(diffs) >= 2 else {"n": len(diffs)}
