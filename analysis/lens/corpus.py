"""The vocabulary lens over a corpus: per layer and variant, top tokens and key-token alignment of every text.

Input: the pooled vectors of every text at every hidden state (``{layer: (texts, hidden)}`` per variant, from one
shared forward per text: ``core.encoding.encoder.Encoder.encode_grid`` over both variants). Output: per-text arrays
(:class:`CorpusLens`) and their corpus summary with bootstrap CIs over texts (:func:`summarise_lens`).

"Where the one word emerges": per text, the first layer from which the lens's top token stays the final layer's
top token through every later layer.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from analysis.lens.vocabulary import LensHead, alignment_measures, exact_topk, first_component
from analysis.stats import paired_stats, rounded

__all__ = [
    "LENS_VIEWS",
    "CorpusLens",
    "LensView",
    "emergence_layer",
    "lens_corpora",
    "lens_corpus",
    "summarise_lens",
]

LensView = Literal["raw", "pc_removed"]
LENS_VIEWS: tuple[LensView, ...] = ("raw", "pc_removed")
MEASURES = ("hits", "hit_rate", "any_hit", "best_rank")
RANK_CAP = 100  # corpus ranks are exact below this; a content token further down counts as rank 100
CHUNK_LOGITS = 1 << 26  # logits per LM-head product (256 MB of float32)


@dataclass
class CorpusLens:
    """Per-text lens results of one variant (base or adapter).

    ``measures[view][name]`` is (texts, hidden states); ``top1[view]`` the top token id (texts, hidden states);
    ``final_top`` the final layer's top-k ids and probabilities (raw view); ``examples`` the top-k of the first
    few texts at every layer, per view: (examples, hidden states, k) ids and probabilities; ``components`` the
    first principal component the pc_removed view removes, per hidden state (hidden states, hidden).
    """

    measures: dict[str, dict[str, np.ndarray]]
    top1: dict[str, np.ndarray]
    final_top_ids: np.ndarray
    final_top_probs: np.ndarray
    example_ids: dict[str, np.ndarray] = field(default_factory=dict)
    example_probs: dict[str, np.ndarray] = field(default_factory=dict)
    components: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))


def lens_corpus(
    head: LensHead,
    by_layer: Mapping[int, np.ndarray],
    final_index: int,
    targets: Sequence[Sequence[int]],
    *,
    top_k: int,
    examples: int = 3,
    chunk_rows: int | None = None,
) -> CorpusLens:
    """The lens of one variant's pooled vectors at every hidden state in ``by_layer``.

    Args:
        head: the model's lens head.
        by_layer: hidden-state index -> (texts, hidden) pooled vectors; ``final_index`` (the number of decoder
            layers) is already after the final norm, every other index gets it here.
        targets: per text, its content-token ids (:func:`analysis.lens.vocabulary.content_token_ids`).
        top_k: tokens kept per vector; alignment counts content tokens ranked within it.
        examples: texts (the first ones) whose top-k at every layer is kept.
        chunk_rows: rows per LM-head product (None: as many as keep the logits near 256 MB).

    Returns:
        A :class:`CorpusLens` whose layer axis follows ``sorted(by_layer)``.
    """
    lenses = lens_corpora(
        head, {"only": by_layer}, final_index, targets, top_k=top_k, examples=examples, chunk_rows=chunk_rows
    )
    return lenses["only"]


def lens_corpora(
    head: LensHead,
    by_variant: Mapping[str, Mapping[int, np.ndarray]],
    final_index: int,
    targets: Sequence[Sequence[int]],
    *,
    top_k: int,
    examples: int = 3,
    chunk_rows: int | None = None,
    timings: dict[str, float] | None = None,
) -> dict[str, CorpusLens]:
    """:func:`lens_corpus` of every variant (``{"base": by_layer, "adapter": by_layer}``), each distinct set of
    vectors read once: below the adapter's first LoRA layer base and adapter vectors are identical, so their lens
    is too. Results equal separate :func:`analysis.lens.vocabulary.project` calls per layer and variant with
    ``removals=(None, first component)`` and ``rank_cap=RANK_CAP``. ``timings``, when given, gains the seconds
    spent in the LM-head products themselves (``lm_head_products``) and the number of distinct sets read
    (``distinct_layers``).

    Raises:
        ValueError: the variants do not cover the same hidden states.
    """
    names = list(by_variant)
    layers = sorted(by_variant[names[0]])
    if any(sorted(by_variant[name]) != layers for name in names):
        raise ValueError("every variant needs the same hidden states")
    n = len(targets)
    shown = min(examples, n)
    rows = chunk_rows or max(8, CHUNK_LOGITS // head.vocab_size)
    wanted, present = _target_matrix(targets)
    hidden = int(head.weight.shape[1])
    lenses = {name: _empty_lens(n, len(layers), top_k, shown, hidden) for name in names}
    for column, layer in enumerate(layers):
        read: list[tuple[np.ndarray, dict[str, Any]]] = []
        for name in names:
            vectors = np.asarray(by_variant[name][layer], dtype=np.float32)
            block = next((b for v, b in read if v.shape == vectors.shape and np.array_equal(v, vectors)), None)
            if block is None:
                tick = time.perf_counter()
                block = _lens_block(head, vectors, layer == final_index, wanted, present, top_k, shown, rows)
                read.append((vectors, block))
                if timings is not None:
                    timings["distinct_layers"] = timings.get("distinct_layers", 0) + 1
                    timings["lm_head_products"] = timings.get("lm_head_products", 0.0) + block.pop("product_seconds")
                    timings["lens_blocks"] = timings.get("lens_blocks", 0.0) + time.perf_counter() - tick
            lens = lenses[name]
            for view in LENS_VIEWS:
                for measure, values in alignment_measures(block[view]["ranks"], top_k).items():
                    lens.measures[view][measure][:, column] = values
                lens.top1[view][:, column] = block[view]["top_ids"][:, 0]
                lens.example_ids[view][:, column] = block[view]["top_ids"][:shown]
                lens.example_probs[view][:, column] = block[view]["example_probs"]
            lens.components[column] = block["component"]
            if layer == final_index:
                lens.final_top_ids, lens.final_top_probs = block["raw"]["top_ids"], block["final_probs"]
    return lenses


def _empty_lens(n: int, layers: int, top_k: int, shown: int, hidden: int) -> CorpusLens:
    return CorpusLens(
        measures={view: {name: np.zeros((n, layers)) for name in MEASURES} for view in LENS_VIEWS},
        top1={view: np.zeros((n, layers), dtype=np.int64) for view in LENS_VIEWS},
        final_top_ids=np.zeros((n, top_k), dtype=np.int64),
        final_top_probs=np.zeros((n, top_k), dtype=np.float32),
        example_ids={view: np.zeros((shown, layers, top_k), dtype=np.int64) for view in LENS_VIEWS},
        example_probs={view: np.zeros((shown, layers, top_k), dtype=np.float32) for view in LENS_VIEWS},
        components=np.zeros((layers, hidden), dtype=np.float32),
    )


def _target_matrix(targets: Sequence[Sequence[int]]) -> tuple[Any, Any]:
    """Targets as a (texts, widest) id matrix and its mask of real entries."""
    import torch

    width = max((len(t) for t in targets), default=0)
    wanted = torch.zeros((len(targets), width), dtype=torch.long)
    present = torch.zeros((len(targets), width), dtype=torch.bool)
    for row, ids in enumerate(targets):
        wanted[row, : len(ids)] = torch.as_tensor(list(ids), dtype=torch.long)
        present[row, : len(ids)] = True
    return wanted, present


def _lens_block(
    head: LensHead, vectors: np.ndarray, final: bool, wanted, present, top_k: int, shown: int, chunk_rows: int
) -> dict[str, Any]:
    """One layer's lens of one set of vectors, both views from one LM-head product per chunk of rows.

    Per view: ``ranks`` (texts, widest target list; -1 padded; a target outside the top ``RANK_CAP`` ranked
    ``RANK_CAP``), ``top_ids`` (texts, top_k), ``example_probs`` (shown, top_k); plus ``final_probs`` (raw view,
    every text; only when ``final``) and the removed ``component``. Probabilities (a log-sum-exp over the
    vocabulary) are computed only for the rows that show them.
    """
    import torch

    normed = head.normed(torch.as_tensor(vectors), already_normed=final)
    component = first_component(normed.cpu().numpy())
    n, width = wanted.shape
    keep = min(max(top_k, RANK_CAP), head.vocab_size)
    device, dtype = head.weight.device, head.weight.dtype
    u = torch.as_tensor(component, dtype=dtype, device=device)
    wu = head.weight @ u
    block: dict[str, Any] = {
        view: {
            "ranks": np.full((n, width), -1, dtype=np.int64),
            "top_ids": np.zeros((n, top_k), dtype=np.int64),
            "example_probs": np.zeros((shown, top_k), dtype=np.float32),
        }
        for view in LENS_VIEWS
    }
    block["component"] = component.astype(np.float32)
    block["final_probs"] = np.zeros((n, top_k), dtype=np.float32) if final else None
    block["product_seconds"] = 0.0
    with torch.inference_mode():
        for begin in range(0, n, chunk_rows):
            stop = min(begin + chunk_rows, n)
            rows = normed[begin:stop].to(device, dtype)
            tick = time.perf_counter()
            logits = torch.nn.functional.linear(rows, head.weight, head.bias)
            block["product_seconds"] += time.perf_counter() - tick
            # Probabilities wanted: the examples (first rows) in both views, every row of the final raw lens.
            probable = max(0, min(shown, stop) - begin)
            for view in LENS_VIEWS:
                if view == "pc_removed":
                    # The head is linear: removing (z.u) u from z removes (z.u) W u from its logits.
                    logits.sub_((rows @ u)[:, None] * wu[None, :])
                capped = head.cap(logits.float())
                values, ids = exact_topk(capped, keep)
                out = block[view]
                out["top_ids"][begin:stop] = ids[:, :top_k].cpu().numpy()
                need = stop - begin if final and view == "raw" else probable
                if need:
                    total = torch.logsumexp(capped[:need], dim=1, keepdim=True)
                    probs = torch.exp(values[:need, :top_k] - total).cpu().numpy()
                    if probable:
                        out["example_probs"][begin : begin + probable] = probs[:probable]
                    if final and view == "raw":
                        block["final_probs"][begin:stop] = probs
                if width:
                    # A target's rank is its position among the top ``keep`` ids; absent -> ``keep``.
                    chunk_wanted, chunk_present = wanted[begin:stop].to(ids.device), present[begin:stop]
                    match = ids[:, :, None] == chunk_wanted[:, None, :]
                    position = torch.where(match.any(1), match.float().argmax(1), torch.full_like(chunk_wanted, keep))
                    ranks = torch.where(chunk_present, position.cpu(), torch.full_like(position.cpu(), -1))
                    out["ranks"][begin:stop] = ranks.numpy()
    return block


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
