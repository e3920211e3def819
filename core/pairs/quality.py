"""Filters, hard negatives and the quality report of LLM-written pairs.

A paraphrase pair teaches meaning only if the positive says the same thing in other words. Each
filter drops what fails one side of that, in this order (a pair is counted under the first it fails):

- ``language``: either text is not plain English (under 90% ASCII letters among its letters, or no
  common English function word in a text of 4+ words);
- ``length_ratio``: the positive has under ``min_length_ratio`` or over ``max_length_ratio`` times
  the anchor's words;
- ``copy_rate``: a near copy by surface form: token Jaccard overlap or normalised edit similarity
  (difflib ratio of the normalised texts) above its ceiling;
- ``similarity_floor`` / ``similarity_ceiling``: the cosine of the two texts' base-model vectors
  (mean pooling, no prompt), centred on the mean vector of the run, is below the floor (not the same
  meaning) or above the ceiling (a near copy in meaning and form). Decoder embeddings are anisotropic
  (unrelated texts have raw cosines near 0.9), so raw cosines would not separate anything.

``mine_hard_negatives`` adds ``negative``: the most similar text of another pair whose centred cosine
with the anchor lies between a floor and a ceiling (too similar is likely a false negative).
:func:`pair_report` gathers counts, keep rates, similarity quantiles, 20 seeded examples and the
provenance of every source; ``core.models.adapters.render_pair_report`` turns it into Markdown for an adapter card.
"""

from __future__ import annotations

import difflib
import logging
import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from core.pairs.guard import normalise_text

log = logging.getLogger(__name__)

FILTERS = ("language", "length_ratio", "copy_rate", "similarity_floor", "similarity_ceiling")
REPORT_EXAMPLES = 20

# Frequent English function words: a 4+ word English sentence almost always has one.
_ENGLISH = frozenset(
    [
        "the",
        "a",
        "an",
        "and",
        "or",
        "but",
        "of",
        "to",
        "in",
        "on",
        "at",
        "for",
        "with",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "it",
        "this",
        "that",
        "i",
        "you",
        "he",
        "she",
        "we",
        "they",
        "not",
        "no",
        "do",
        "does",
        "did",
        "have",
        "has",
        "had",
        "will",
        "would",
        "can",
        "could",
        "my",
        "your",
        "his",
        "her",
        "our",
        "their",
        "what",
        "who",
        "why",
        "how",
        "when",
        "if",
        "so",
        "as",
        "by",
        "from",
        "me",
        "him",
        "them",
        "us",
        "all",
        "there",
    ]
)
_LETTER = re.compile(r"[^\W\d_]", re.UNICODE)

Embed = Callable[[Sequence[str]], np.ndarray]


@dataclass(frozen=True)
class FilterConfig:
    min_length_ratio: float = 0.5
    max_length_ratio: float = 2.0
    max_token_overlap: float = 0.8  # Jaccard of normalised word sets
    max_edit_similarity: float = 0.9  # difflib ratio of normalised texts
    min_similarity: float = 0.3  # centred cosine under the base encoder
    max_similarity: float = 0.95
    min_ascii_letters: float = 0.9


def is_english(text: str, config: FilterConfig = FilterConfig()) -> bool:
    """A cheap heuristic: mostly ASCII letters, and a common English word in any text of 4+ words."""
    letters = _LETTER.findall(text)
    if not letters or sum(ch.isascii() for ch in letters) < config.min_ascii_letters * len(letters):
        return False
    words = normalise_text(text).split()
    return len(words) < 4 or any(w in _ENGLISH for w in words)


def token_overlap(a: str, b: str) -> float:
    """Jaccard overlap of the normalised word sets."""
    x, y = set(normalise_text(a).split()), set(normalise_text(b).split())
    return len(x & y) / len(x | y) if x | y else 1.0


def edit_similarity(a: str, b: str) -> float:
    """difflib's ratio of the normalised texts (1.0: identical)."""
    return difflib.SequenceMatcher(None, normalise_text(a), normalise_text(b), autojunk=False).ratio()


def surface_verdict(anchor: str, positive: str, config: FilterConfig = FilterConfig()) -> str | None:
    """The first text-only filter the pair fails (``None``: it passes them)."""
    if not (is_english(anchor, config) and is_english(positive, config)):
        return "language"
    ratio = len(positive.split()) / max(1, len(anchor.split()))
    if not config.min_length_ratio <= ratio <= config.max_length_ratio:
        return "length_ratio"
    if token_overlap(anchor, positive) > config.max_token_overlap or (
        edit_similarity(anchor, positive) > config.max_edit_similarity
    ):
        return "copy_rate"
    return None


def centred_unit(vectors: np.ndarray) -> np.ndarray:
    """Vectors minus their mean, L2-normalised: cosines between them are then informative."""
    centred = vectors - vectors.mean(axis=0, keepdims=True)
    return centred / np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-12)


def pair_similarities(pairs: Sequence[dict[str, Any]], embed: Embed) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centred cosines of anchor vs positive, and the centred unit vectors of anchors and positives."""
    n = len(pairs)
    vectors = embed([p["anchor"] for p in pairs] + [p["positive"] for p in pairs])
    unit = centred_unit(np.asarray(vectors, dtype=np.float64))
    anchors, positives = unit[:n], unit[n:]
    return (anchors * positives).sum(axis=1), anchors, positives


def base_encoder_embed(model_name: str) -> Embed:
    """Mean-pooled, prompt-free vectors of the base model (no adapter): the similarity the filters use."""
    from core.encoding.encoder import Encoder

    encoder = Encoder(model_name, prompt="none", pooling="mean")
    return lambda texts: encoder.encode(list(texts))


def filter_pairs(
    pairs: Sequence[dict[str, Any]],
    config: FilterConfig = FilterConfig(),
    embed: Embed | None = None,
) -> tuple[list[dict[str, Any]], Counter[str], dict[str, Any]]:
    """Pairs that pass every filter (with ``similarity`` added), drops per filter, and similarity stats.

    Without ``embed`` the similarity filters are skipped (and say so in the stats).
    """
    dropped: Counter[str] = Counter()
    survivors = []
    for pair in pairs:
        verdict = surface_verdict(pair["anchor"], pair["positive"], config)
        if verdict is None:
            survivors.append(pair)
        else:
            dropped[verdict] += 1
    stats: dict[str, Any] = {"similarity": "skipped (no encoder)"}
    if embed is None or len(survivors) < 2:
        return [dict(p) for p in survivors], dropped, stats
    sims, _, _ = pair_similarities(survivors, embed)
    stats = {"similarity": "centred cosine, base encoder", "before_filter": _quantiles(sims)}
    kept = []
    for pair, sim in zip(survivors, sims, strict=True):
        if sim < config.min_similarity:
            dropped["similarity_floor"] += 1
        elif sim > config.max_similarity:
            dropped["similarity_ceiling"] += 1
        else:
            kept.append({**pair, "similarity": round(float(sim), 4)})
    stats["kept"] = _quantiles(np.asarray([p["similarity"] for p in kept]))
    return kept, dropped, stats


def _quantiles(values: np.ndarray) -> dict[str, float]:
    if not len(values):
        return {}
    q = np.quantile(values, [0.0, 0.1, 0.5, 0.9, 1.0])
    return {k: round(float(v), 4) for k, v in zip(("min", "p10", "median", "p90", "max"), q, strict=True)}


def mine_hard_negatives(
    pairs: Sequence[dict[str, Any]],
    embed: Embed,
    floor: float = 0.2,
    ceiling: float = 0.7,
) -> tuple[list[dict[str, Any]], int]:
    """Pairs with ``negative`` (and ``negative_similarity``) added where a candidate qualifies.

    Candidates are the positives of the other pairs whose text differs from both of this pair's; the
    most similar one to the anchor (centred cosine) within ``[floor, ceiling]`` is taken. Returns the
    pairs and how many got a negative.
    """
    if len(pairs) < 2:
        return [dict(p) for p in pairs], 0
    _, anchors, positives = pair_similarities(pairs, embed)
    scores = anchors @ positives.T
    keys = [(normalise_text(p["anchor"]), normalise_text(p["positive"])) for p in pairs]
    out = []
    mined = 0
    for i, pair in enumerate(pairs):
        row = scores[i].copy()
        row[i] = -np.inf
        row[(row < floor) | (row > ceiling)] = -np.inf
        candidates = (j for j in np.argsort(-row) if np.isfinite(row[j]) and keys[j][1] not in keys[i])
        j = next(candidates, None)
        if j is None:
            out.append(dict(pair))
        else:
            out.append({**pair, "negative": pairs[j]["positive"], "negative_similarity": round(float(row[j]), 4)})
            mined += 1
    return out, mined


def pair_report(
    *,
    n_sources: int,
    generation_drops: Counter[str],
    filter_drops: Counter[str],
    kept: Sequence[dict[str, Any]],
    sources: Sequence[dict[str, Any]],
    config: FilterConfig | None,
    similarity_stats: dict[str, Any] | None = None,
    generator: dict[str, Any] | None = None,
    negatives: dict[str, Any] | None = None,
    track_overlap: dict[str, Any] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """The JSON written beside a pair file: what went in, what each step dropped, and examples."""
    steps: list[dict[str, Any]] = []
    remaining = n_sources
    for reason, count in sorted(generation_drops.items()):
        steps.append({"filter": f"generation:{reason}", "dropped": count})
        remaining -= count
    for name in FILTERS:
        count = filter_drops.get(name, 0)
        steps.append(
            {
                "filter": name,
                "seen": remaining,
                "dropped": count,
                "keep_rate": round(1 - count / remaining, 4) if remaining else None,
            }
        )
        remaining -= count
    rng = random.Random(seed)
    examples = rng.sample(list(kept), min(REPORT_EXAMPLES, len(kept)))
    return {
        "sources": list(sources),
        "generator": generator,
        "filters": asdict(config) if config is not None else None,
        "counts": {"source_texts": n_sources, "kept": len(kept), "steps": steps},
        "similarity": similarity_stats,
        "negatives": negatives,
        "track_overlap": track_overlap,
        "examples": [{k: p[k] for k in ("anchor", "positive", "similarity", "negative") if k in p} for p in examples],
    }
