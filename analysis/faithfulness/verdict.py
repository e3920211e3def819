"""The verdict on a pair's explanations: which method's token order the model follows, against chance.

Input: an attribution job's curves (``{"A": {setting: record}, "B": {...}}``, each record as
``analysis.faithfulness.report.run_chunk`` writes it). For each text and setting, every method's deletion AOPC is
set against the random floor's draws (mean, sample SD, range): ``vs_random`` is the method's AOPC minus the
floor's mean, ``z`` that difference in floor SDs, ``beats`` the share of random draws the method's AOPC exceeds.
Methods are ranked by ``vs_random`` within a text and setting (1: the most faithful). Agreement between
methods is the Spearman correlation of their full token orders.

A text's tokens are identified in the records by their strings, so a token string met twice in a text is ambiguous
(which "dog" an order put first is not recorded): agreement is computed over the tokens whose string is unique.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import spearmanr

__all__ = ["FLOOR", "method_agreement", "verdict_rows"]

FLOOR = "random"


def _floor(record: Mapping[str, Any]) -> np.ndarray:
    entry = record["methods"][FLOOR]
    draws = entry.get("aopc_deletion_draws") or [entry["aopc_deletion"]]
    return np.asarray(draws, dtype=np.float64)


def verdict_rows(curves: Mapping[str, Mapping[str, Mapping[str, Any]]], tolerance: float = 0.05) -> list[dict]:
    """One row per text, setting and method (the random floor excluded), ranked within text and setting.

    Each row: ``text``, ``setting``, ``rank``, ``method``, ``aopc_deletion``, ``random_mean``, ``random_sd``
    (None with one draw), ``random_min``, ``random_max``, ``draws``, ``vs_random``, ``z`` (None without spread),
    ``beats`` (share of draws below the method's AOPC), ``aopc_insertion_vs_random``, and ``unreliable``: True
    for integrated gradients whose own completeness error exceeded ``tolerance`` on that text.
    """
    rows = []
    for text, by_setting in curves.items():
        for setting, record in by_setting.items():
            draws = _floor(record)
            floor, spread = float(draws.mean()), float(draws.std(ddof=1)) if len(draws) > 1 else None
            insertion_floor = float(record["methods"][FLOOR]["aopc_insertion"])
            group = []
            for method, entry in record["methods"].items():
                if method == FLOOR:
                    continue
                value = float(entry["aopc_deletion"])
                difference = value - floor
                unreliable = method == "integrated_gradients" and record.get("ig_relative_delta", 0.0) > tolerance
                group.append(
                    {
                        "text": text,
                        "setting": setting,
                        "method": method,
                        "aopc_deletion": value,
                        "random_mean": floor,
                        "random_sd": spread,
                        "random_min": float(draws.min()),
                        "random_max": float(draws.max()),
                        "draws": len(draws),
                        "vs_random": difference,
                        "z": difference / spread if spread else None,
                        "beats": float((draws < value).mean()),
                        "aopc_insertion_vs_random": float(entry["aopc_insertion"]) - insertion_floor,
                        "unreliable": bool(unreliable),
                    }
                )
            group.sort(key=lambda row: -row["vs_random"])
            for rank, row in enumerate(group, start=1):
                rows.append({"rank": rank, **row})
    return rows


def _ranks(order: Sequence[str]) -> dict[str, int]:
    """Position of each token of ``order`` whose string occurs once in it."""
    counts = Counter(order)
    return {token: position for position, token in enumerate(order) if counts[token] == 1}


def method_agreement(record: Mapping[str, Any]) -> dict[str, Any]:
    """Spearman correlation between every two methods' token orders in one record (random excluded).

    Returns ``{"methods": [...], "rho": [[...]], "tokens": n}``: ``rho[i][j]`` over the tokens with a unique string
    (``tokens`` of them in the first method's order), None where fewer than 3 are shared; the diagonal is 1.
    """
    methods = [m for m in record["methods"] if m != FLOOR]
    ranks = {m: _ranks(record["methods"][m]["order"]) for m in methods}
    rho: list[list[float | None]] = []
    for first in methods:
        row: list[float | None] = []
        for second in methods:
            shared = sorted(set(ranks[first]) & set(ranks[second]))
            if first == second:
                row.append(1.0)
                continue
            if len(shared) < 3:
                row.append(None)
                continue
            value = spearmanr([ranks[first][t] for t in shared], [ranks[second][t] for t in shared]).statistic
            row.append(round(float(value), 4) if np.isfinite(value) else None)
        rho.append(row)
    return {"methods": methods, "rho": rho, "tokens": len(ranks[methods[0]]) if methods else 0}
