"""The layer profile and the geometry of fine-tuning, from every layer's pooled vectors (``analysis.lens.inputs``).

Layer profile: per variant, pooling and hidden state, the task's V-measure (mean and spread over k-means seeds,
``core.metrics.score_embeddings``) beside label-free measures (anisotropy, effective rank, alignment and uniformity
on held-apart positive pairs); the best (pooling, layer) per variant is marked.

Geometry: base vs adapter at the embedding setting's pooling and layer, each measure's difference with a paired
bootstrap CI, and linear CKA between base and adapter at every layer (which layers the LoRA changed).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np

from analysis.lens.geometry import (
    alignment,
    anisotropy,
    bootstrap_difference,
    bootstrap_value,
    effective_rank,
    gram,
    linear_cka_gram,
    pc_share,
    uniformity,
    unit,
)
from analysis.lens.inputs import Grid
from core.metrics import score_embeddings

__all__ = ["fine_tuning_geometry", "layer_profile"]


def _round(values: Sequence[float], digits: int = 6) -> list[float]:
    return [round(float(v), digits) for v in values]


def layer_profile(
    grid: Grid,
    labels: Sequence[str] | None,
    pair_grid: Grid | None,
    poolings: Sequence[str],
    num_hidden_states: int,
    seeds: Sequence[int],
) -> dict[str, Any]:
    """Per variant and pooling, lists over hidden states 0..L of: ``v_measure`` and ``v_measure_std`` (when
    ``labels``), ``anisotropy``, ``effective_rank`` (the task texts), ``alignment`` and ``uniformity`` (the pairs:
    anchors then positives in ``pair_grid``); ``best`` per variant: the (pooling, layer) of the highest V-measure."""
    out: dict[str, Any] = {"layers": list(range(num_hidden_states)), "poolings": list(poolings), "variants": {}}
    # Below the adapter's first LoRA layer base and adapter vectors are identical: each distinct set is scored once.
    scored: dict[tuple[str, int], list[tuple[np.ndarray, np.ndarray | None, dict[str, float]]]] = {}
    for variant, by_combo in grid.items():
        section: dict[str, Any] = {}
        best: dict[str, Any] | None = None
        for pooling in poolings:
            rows: dict[str, list[float]] = {"anisotropy": [], "effective_rank": []}
            if labels is not None:
                rows.update(v_measure=[], v_measure_std=[])
            if pair_grid is not None:
                rows.update(alignment=[], uniformity=[])
            for index in range(num_hidden_states):
                vectors = by_combo[(pooling, index)]
                both = pair_grid[variant][(pooling, index)] if pair_grid is not None else None
                earlier = scored.setdefault((pooling, index), [])
                values = next((v for x, p, v in earlier if _same(x, vectors) and _same(p, both)), None)
                if values is None:
                    values = _layer_values(vectors, labels, both, seeds)
                    earlier.append((vectors, both, values))
                for name in rows:
                    rows[name].append(values[name])
                if labels is not None and (best is None or values["v_measure"] > best["v_measure"]):
                    best = {"pooling": pooling, "layer": index, "v_measure": round(values["v_measure"], 6)}
                    best["v_measure_std"] = round(values["v_measure_std"], 6)
            section[pooling] = {name: _round(values) for name, values in rows.items()}
        out["variants"][variant] = {"poolings": section, "best": best}
    return out


def _same(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.shape == b.shape and bool(np.array_equal(a, b))


def _layer_values(
    vectors: np.ndarray, labels: Sequence[str] | None, both: np.ndarray | None, seeds: Sequence[int]
) -> dict[str, float]:
    """One (pooling, layer)'s measures: label-free ones, V-measure where ``labels``, pair ones where ``both``."""
    values = {"anisotropy": anisotropy(vectors), "effective_rank": effective_rank(vectors)}
    if labels is not None:
        scores = score_embeddings(vectors, labels, seeds=seeds)
        values.update(v_measure=scores["v_measure"], v_measure_std=scores["v_measure_std"])
    if both is not None:
        half = len(both) // 2
        values.update(alignment=alignment(both[:half], both[half:]), uniformity=uniformity(both))
    return values


def fine_tuning_geometry(
    grid: Grid,
    pair_grid: Grid | None,
    combo: tuple[str, int],
    num_hidden_states: int,
    *,
    n_boot: int = 200,
    seed: int = 0,
) -> dict[str, Any]:
    """Base vs adapter at ``combo`` (the setting's pooling and hidden state): anisotropy, effective rank, first
    PC share (task texts), alignment and uniformity (held-apart pairs), each with a paired bootstrap CI of the
    difference; and linear CKA base-adapter at every hidden state of ``combo``'s pooling with a bootstrap CI."""
    base, tuned = grid["base"][combo], grid["adapter"][combo]
    n = len(base)
    sides = {False: base, True: tuned}
    out: dict[str, Any] = {"pooling": combo[0], "layer": combo[1]}
    units = {side: unit(v) for side, v in sides.items()}
    out["anisotropy"] = bootstrap_difference(
        lambda index, side: anisotropy(units[side], np.bincount(index, minlength=n)), n, n_boot=n_boot, seed=seed
    )
    # Set-level statistics: a resample's duplicated texts bias their value, so their intervals are re-centred.
    out["effective_rank"] = bootstrap_difference(
        lambda index, side: effective_rank(sides[side][index]), n, n_boot=n_boot, seed=seed, recentre=True
    )
    out["pc_share"] = bootstrap_difference(
        lambda index, side: pc_share(sides[side][index]), n, n_boot=n_boot, seed=seed, recentre=True
    )
    if pair_grid is not None:
        pairs = {False: pair_grid["base"][combo], True: pair_grid["adapter"][combo]}
        half = len(pairs[False]) // 2
        pair_units = {side: unit(v) for side, v in pairs.items()}

        def pair_alignment(index: np.ndarray, side: bool) -> float:
            return alignment(pair_units[side][:half][index], pair_units[side][half:][index])

        def pair_uniformity(index: np.ndarray, side: bool) -> float:
            # Distinct pairs only: a duplicated text would pair with itself at distance 0.
            index = np.unique(index)
            return uniformity(np.concatenate([pair_units[side][:half][index], pair_units[side][half:][index]]))

        out["alignment"] = bootstrap_difference(pair_alignment, half, n_boot=n_boot, seed=seed)
        out["uniformity"] = bootstrap_difference(pair_uniformity, half, n_boot=n_boot, seed=seed, recentre=True)
    cka = []
    for index in range(num_hidden_states):
        key = (combo[0], index)
        k, m = gram(grid["base"][key]), gram(grid["adapter"][key])
        # CKA of a resample is a set-level statistic too (duplicated texts inflate it): re-centred interval.
        statistic = partial(linear_cka_gram, k, m)
        cka.append(bootstrap_value(lambda rows, f=statistic: f(rows), n, n_boot=n_boot, seed=seed, recentre=True))
    out["cka_per_layer"] = {
        "layers": list(range(num_hidden_states)),
        **{name: [entry[name] for entry in cka] for name in ("value", "ci_low", "ci_high")},
        "n_boot": n_boot,
    }
    changed = [i for i, entry in enumerate(cka) if entry["ci_high"] < 0.999]
    out["cka_first_changed_layer"] = changed[0] if changed else None
    return out
