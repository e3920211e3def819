"""The vocabulary lens over a corpus: per layer and variant, top tokens and key-token alignment of every text.

Input: the pooled vectors of every text at every hidden state (``{layer: (texts, hidden)}`` per variant, from one
shared forward per text: ``core.encoding.encoder.Encoder.encode_grid`` over both variants). Output: per-text arrays
(:class:`CorpusLens`) and their corpus summary with bootstrap CIs over texts (:func:`summarise_lens`).

"Where the one word emerges": per text, the first layer from which the lens's top token stays the final layer's
top token through every later layer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from analysis.lens.vocabulary import LensHead, alignment_measures, first_component, project
from analysis.stats import paired_stats, rounded

__all__ = ["LENS_VIEWS", "CorpusLens", "LensView", "emergence_layer", "lens_corpus", "summarise_lens"]

LensView = Literal["raw", "pc_removed"]
LENS_VIEWS: tuple[LensView, ...] = ("raw", "pc_removed")
MEASURES = ("hits", "hit_rate", "any_hit", "best_rank")
RANK_CAP = 100  # corpus ranks are exact below this; a content token further down counts as rank 100


@dataclass
class CorpusLens:
    """Per-text lens results of one variant (base or adapter).

    ``measures[view][name]`` is (texts, hidden states); ``top1[view]`` the top token id (texts, hidden states);
    ``final_top`` the final layer's top-k ids and probabilities (raw view); ``examples`` the top-k of the first
    few texts at every layer, per view: (examples, hidden states, k) ids and probabilities.
    """

    measures: dict[str, dict[str, np.ndarray]]
    top1: dict[str, np.ndarray]
    final_top_ids: np.ndarray
    final_top_probs: np.ndarray
    example_ids: dict[str, np.ndarray] = field(default_factory=dict)
    example_probs: dict[str, np.ndarray] = field(default_factory=dict)


def lens_corpus(
    head: LensHead,
    by_layer: Mapping[int, np.ndarray],
    final_index: int,
    targets: Sequence[Sequence[int]],
    *,
    top_k: int,
    examples: int = 3,
    chunk_rows: int = 64,
) -> CorpusLens:
    """The lens of one variant's pooled vectors at every hidden state in ``by_layer``.

    Args:
        head: the model's lens head.
        by_layer: hidden-state index -> (texts, hidden) pooled vectors; ``final_index`` (the number of decoder
            layers) is already after the final norm, every other index gets it here.
        targets: per text, its content-token ids (:func:`analysis.lens.vocabulary.content_token_ids`).
        top_k: tokens kept per vector; alignment counts content tokens ranked within it.
        examples: texts (the first ones) whose top-k at every layer is kept.

    Returns:
        A :class:`CorpusLens` whose layer axis follows ``sorted(by_layer)``.
    """
    import torch

    layers = sorted(by_layer)
    n = len(targets)
    measures = {view: {name: np.zeros((n, len(layers))) for name in MEASURES} for view in LENS_VIEWS}
    top1 = {view: np.zeros((n, len(layers)), dtype=np.int64) for view in LENS_VIEWS}
    shown = min(examples, n)
    example_ids = {view: np.zeros((shown, len(layers), top_k), dtype=np.int64) for view in LENS_VIEWS}
    example_probs = {view: np.zeros((shown, len(layers), top_k), dtype=np.float32) for view in LENS_VIEWS}
    final_ids = final_probs = np.zeros((n, top_k))
    for column, layer in enumerate(layers):
        vectors = torch.as_tensor(np.asarray(by_layer[layer], dtype=np.float32))
        normed = head.normed(vectors, already_normed=layer == final_index)
        component = first_component(normed.cpu().numpy())
        projections = project(
            head,
            normed,
            top_k=top_k,
            targets=targets,
            removals=(None, component),
            chunk_rows=chunk_rows,
            rank_cap=RANK_CAP,
        )
        for view, projection in zip(LENS_VIEWS, projections, strict=True):
            for name, values in alignment_measures(projection.target_ranks, top_k).items():
                measures[view][name][:, column] = values
            top1[view][:, column] = projection.top_ids[:, 0]
            example_ids[view][:, column] = projection.top_ids[:shown]
            example_probs[view][:, column] = projection.top_probs[:shown]
        if layer == final_index:
            final_ids, final_probs = projections[0].top_ids, projections[0].top_probs
    return CorpusLens(measures, top1, final_ids, final_probs, example_ids, example_probs)


def emergence_layer(top1: np.ndarray, layers: Sequence[int]) -> np.ndarray:
    """Per text, the first of ``layers`` from which the top token equals the last layer's through the end."""
    top1 = np.asarray(top1)
    same = top1 == top1[:, -1:]
    # Walk from the end: the run of agreeing layers that reaches the final one.
    run = np.flip(np.cumprod(np.flip(same, 1), 1), 1).astype(bool)
    first = run.argmax(1)
    return np.asarray(layers)[first].astype(np.float64)


def _mean_ci(values: np.ndarray, n_boot: int, seed: int) -> dict[str, Any]:
    """Mean over texts with a bootstrap CI, elementwise over later axes; texts with NaN are dropped per column."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
        squeeze = True
    else:
        squeeze = False
    out: dict[str, list] = {"mean": [], "ci_low": [], "ci_high": []}
    for column in values.T:
        kept = column[np.isfinite(column)]
        if len(kept) < 2:
            stats = {"mean": float(np.mean(kept)) if len(kept) else float("nan"), "ci_low": float("nan")}
            stats["ci_high"] = float("nan")
        else:
            s = paired_stats(kept, n_boot=n_boot, seed=seed)
            stats = {"mean": float(s.mean), "ci_low": float(s.low), "ci_high": float(s.high)}
        for key in out:
            out[key].append(stats[key])
    result: dict[str, Any] = {
        key: rounded(np.array(v))[0] if squeeze else rounded(np.array(v)) for key, v in out.items()
    }
    result["n"] = int(np.isfinite(values).all(1).sum())
    return result


def summarise_lens(
    lenses: Mapping[str, CorpusLens],
    layers: Sequence[int],
    decode: Any,
    *,
    top_k: int,
    n_boot: int = 1000,
    seed: int = 0,
    top_tokens: int = 15,
) -> dict[str, Any]:
    """The corpus view: per variant and view, mean alignment per layer with CIs; adapter minus base (paired,
    per layer); the emergence layer; the most frequent final-layer top tokens. ``decode(id) -> str``."""
    out: dict[str, Any] = {"layers": list(layers), "top_k": top_k, "views": {}}
    for view in LENS_VIEWS:
        section: dict[str, Any] = {}
        for variant, lens in lenses.items():
            section[variant] = {name: _mean_ci(lens.measures[view][name], n_boot, seed) for name in MEASURES}
            emergence = emergence_layer(lens.top1[view], layers)
            section[variant]["emergence_layer"] = _mean_ci(emergence, n_boot, seed)
            peak = int(np.nanargmax(np.nanmean(lens.measures[view]["hit_rate"], 0)))
            section[variant]["best_layer"] = int(layers[peak])
        if {"base", "adapter"} <= set(lenses):
            section["difference"] = {}
            for name in ("hit_rate", "hits", "any_hit"):
                diff = lenses["adapter"].measures[view][name] - lenses["base"].measures[view][name]
                diff = diff[np.isfinite(diff).all(1)]
                section["difference"][name] = paired_stats(diff, n_boot=n_boot, seed=seed).to_dict()
            shift = emergence_layer(lenses["adapter"].top1[view], layers) - emergence_layer(
                lenses["base"].top1[view], layers
            )
            section["difference"]["emergence_layer"] = paired_stats(shift, n_boot=n_boot, seed=seed).to_dict()
        out["views"][view] = section
    out["final_top_tokens"] = {
        variant: [
            {"token": decode(int(token)), "count": count}
            for token, count in Counter(lens.final_top_ids[:, 0].tolist()).most_common(top_tokens)
        ]
        for variant, lens in lenses.items()
    }
    return out
