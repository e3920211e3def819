"""The uncertainty columns of the Clustering quality table: CIs over texts, paired base-vs-adapter differences and
which rows are within noise of the best, from the cells' stored bootstrap replicates (``uncertainty``).

A row's average over the shown tasks has a CI over texts when every shown task's cell stores replicates (cells
made since replicates were stored); its replicate r is the mean over tasks of each task's replicate r (the tasks'
texts are drawn independently). Two rows pair when each shown task's cells hold the same sample of texts with the
same resamples: then a difference's CI is the CI of their replicates' difference. Rows from older cells have only
the spread over k-means seeds, and the ``spread`` column says so; no number is made up for them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from analysis.clustering.summary import AVERAGES, QUALITY_COLUMNS, base_row_key, cell_row, index_columns
from analysis.stats import centred_ci, replicate_ci

__all__ = [
    "BY_SEEDS",
    "BY_TEXTS",
    "UNCERTAINTY_COLUMNS",
    "RowReplicates",
    "paired_difference",
    "row_replicates",
    "uncertainty_view",
]

BY_TEXTS, BY_SEEDS = "texts (95% CI)", "k-means seeds only (±2 std)"
UNCERTAINTY_COLUMNS = (
    "average ±",
    "n texts",
    "spread",
    "vs base ±",
    "within noise of best",
    "gap",
    "gap ±",
    "gap AUC",
    "gap AUC ±",
    "average low",
    "average high",
)
_PAIR_STATS = ("gap", "gap_z", "auc")


@dataclass(frozen=True)
class RowReplicates:
    """One table row over some tasks: n texts, the seed spread of its average and, where every task's cell has
    them, bootstrap replicates over texts of its average V-measure and pair statistics.

    ``samples`` identifies the texts and resamples per task; two rows pair when their ``samples`` are equal.
    """

    n_texts: int
    seed_std: float
    v_measure: np.ndarray | None
    pairs: dict[str, tuple[float, np.ndarray]]  # statistic -> (value, replicates), every task having it
    samples: tuple[tuple[str, str, int, int], ...]

    @property
    def by_texts(self) -> bool:
        return self.v_measure is not None


def _seed_std(cells: Sequence[dict[str, Any]]) -> float:
    """Std over k-means seeds of the task average (seed i of every task together); NaN if the seeds differ."""
    runs = [tuple(cell["scores"].get("v_measure_per_seed") or ()) for cell in cells]
    if not runs or len({len(run) for run in runs}) != 1 or len(runs[0]) < 2:
        return math.nan
    return float(np.mean(np.array(runs, dtype=float), axis=0).std())


def row_replicates(cells: Sequence[dict[str, Any]]) -> RowReplicates:
    """A row's :class:`RowReplicates` from its cells, one per shown task."""
    n_texts = sum(int(cell["task"]["texts"]) for cell in cells)
    seed_std = _seed_std(cells)
    stored = [cell.get("uncertainty") for cell in cells]
    samples = tuple(
        (
            cell["task"]["name"],
            str(cell["task"].get("sample_sha256")),
            int(u.get("n_boot", 0)),
            int(u.get("boot_seed", 0)),
        )
        for cell, u in zip(cells, stored, strict=True)
        if isinstance(u, dict)
    )
    if not cells or len(samples) != len(cells) or len({len(u["v_measure"]) for u in stored}) != 1:
        return RowReplicates(n_texts, seed_std, None, {}, ())
    v_measure = np.mean([np.asarray(u["v_measure"], dtype=np.float64) for u in stored], axis=0)
    pairs = {}
    for name in _PAIR_STATS:
        if all(isinstance(u.get(name), dict) and "replicates" in u[name] for u in stored):
            value = float(np.mean([u[name]["value"] for u in stored]))
            pairs[name] = (value, np.mean([np.asarray(u[name]["replicates"], dtype=np.float64) for u in stored], 0))
    return RowReplicates(n_texts, seed_std, v_measure, pairs, samples)


def paired_difference(
    first: RowReplicates, second: RowReplicates, point: float | None = None
) -> tuple[float, float] | None:
    """95% CI of first's average V-measure minus second's, paired over the same texts; None when they do not pair.

    With ``point`` (the difference of the rows' averages) the interval is centred on it
    (``analysis.stats.centred_ci``), else it is the replicates' percentile interval."""
    if not (first.by_texts and second.by_texts) or first.samples != second.samples:
        return None
    replicates = first.v_measure - second.v_measure  # type: ignore[operator]
    return replicate_ci(replicates) if point is None else centred_ci(point, replicates)


def _plus_minus(value: float, low: float, high: float, digits: int = 4) -> str:
    if math.isnan(value) or math.isnan(low):
        return ""
    return f"{value:.{digits}f} ± {(high - low) / 2:.{digits}f}"


def uncertainty_view(view: Any, cells: Sequence[dict[str, Any]], tasks: Sequence[str]) -> Any:
    """``view`` (a ``quality_view`` table) with the ``UNCERTAINTY_COLUMNS`` added after its averages.

    ``average ±``: the average and the half-width of its 95% CI over texts (centred on the average:
    ``analysis.stats.centred_ci``), or ±2 seed stds where the cells store
    no replicates (``spread`` names which); ``average low``/``average high`` are that interval's ends.
    ``vs base ±``: the paired adapter-minus-base difference and its CI half-width (over texts only: empty where
    the rows do not pair). ``within noise of best``: the row's
    difference from the best average shown is not distinguishable from 0 (paired CI over texts includes 0, or
    without replicates within 2 combined seed stds). ``gap``/``gap AUC``: the mean within-minus-between cosine
    gap (the model's own cosine units) and its rank form (scale-free: compares across models), with ± over texts.
    """
    import pandas as pd

    index = index_columns(view)
    with_method = "method" in index
    by_slot = {(cell_row(cell, with_method), cell["task"]["name"]): cell for cell in cells}

    def replicates(key: tuple[str, ...]) -> RowReplicates:
        found = [by_slot.get((key, task)) for task in tasks]
        present = [cell for cell in found if cell is not None]
        if len(present) != len(found):  # a missing task: the row has no average to put a spread on
            return RowReplicates(sum(int(c["task"]["texts"]) for c in present), math.nan, None, {}, ())
        return row_replicates(present)

    keys = [tuple(map(str, row)) for row in view[index].to_numpy()]
    rows = {key: replicates(key) for key in keys}
    averages = dict(zip(keys, view["average"].to_numpy(dtype=float), strict=True))
    # quality_view's gain looks the base row up among all rows, so it is there when filters hide the base row.
    gains = dict(zip(keys, view["vs base"].to_numpy(dtype=float), strict=True)) if "vs base" in view else {}
    finite = [key for key in keys if not math.isnan(averages[key])]
    best = max(finite, key=lambda key: averages[key]) if finite else None
    columns: dict[str, list[Any]] = {name: [] for name in UNCERTAINTY_COLUMNS}
    for key in keys:
        row, value = rows[key], averages[key]
        if row.by_texts:
            low, high = centred_ci(value, row.v_measure)
        else:
            low, high = value - 2 * row.seed_std, value + 2 * row.seed_std
        columns["average ±"].append(_plus_minus(value, low, high))
        columns["average low"].append(low)
        columns["average high"].append(high)
        columns["n texts"].append(row.n_texts)
        columns["spread"].append(BY_TEXTS if row.by_texts else BY_SEEDS)
        base_key = base_row_key(key)
        base = rows.get(base_key) if base_key in rows else (replicates(base_key) if base_key else None)
        gain = gains.get(key, math.nan)
        difference = paired_difference(row, base, gain) if base is not None and not math.isnan(gain) else None
        if difference is not None:
            columns["vs base ±"].append(_plus_minus(gain, *difference))
        else:
            columns["vs base ±"].append("")
        columns["within noise of best"].append(_within_noise(rows, averages, best, key))
        for name, label in (("gap", "gap"), ("auc", "gap AUC")):
            if name in row.pairs:
                point, reps = row.pairs[name]
                columns[label].append(round(point, 4))
                columns[f"{label} ±"].append(_plus_minus(point, *replicate_ci(reps)))
            else:
                columns[label].append(math.nan)
                columns[f"{label} ±"].append("")
    out = view.copy()
    anchor = max(out.columns.get_loc(c) for c in (*AVERAGES, *QUALITY_COLUMNS) if c in out.columns) + 1
    for offset, name in enumerate(UNCERTAINTY_COLUMNS):
        out.insert(anchor + offset, name, pd.Series(columns[name], index=out.index))
    return out


def _within_noise(
    rows: dict[tuple[str, ...], RowReplicates], averages: dict[tuple[str, ...], float], best: Any, key: Any
) -> bool | None:
    """Whether the row cannot be told apart from the best row; None for a row without an average."""
    if best is None or math.isnan(averages[key]):
        return None
    if key == best:
        return True
    difference = paired_difference(rows[best], rows[key], averages[best] - averages[key])
    if difference is not None:
        return bool(difference[0] <= 0.0)
    spread = 2 * math.sqrt(rows[best].seed_std ** 2 + rows[key].seed_std ** 2)
    if math.isnan(spread):
        return None
    return bool(averages[best] - averages[key] <= spread)
