"""Deletion and insertion curves of one text of a pair, every explanation method and the random floor.

The faithfulness run's own pieces (``analysis.faithfulness``: rankers, perturbation, ``run_chunk``) on one text, its
partner the pair's other text, with the step caps of an attribution job: the IG ranker's cap is the job's
``curve_ig_steps`` and the random floor has ``random_draws`` orders, so the verdict
(:mod:`analysis.attribution.verdict`) has a spread to compare each method against.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from analysis.categories import sides
from analysis.faithfulness.config import METHODS, FaithfulnessConfig
from analysis.faithfulness.perturbation import content_text, pooled_vectors
from analysis.faithfulness.records import Pending
from analysis.faithfulness.report import checked_peak, run_chunk
from core.encoding.encoder import Encoder
from core.runtime.errors import ConfigError

if TYPE_CHECKING:
    from analysis.attribution.job import AttributionRequest

__all__ = ["curves_config", "pair_curves"]


def curves_config(encoder: Encoder, request: AttributionRequest) -> FaithfulnessConfig:
    """The faithfulness settings of a job's curves: all methods, its random draws, its IG cap."""
    return FaithfulnessConfig(
        model=encoder.loaded.name,
        k=request.k,
        methods=METHODS,
        random_seeds=request.random_draws,
        peak_layer=request.peak_layer,
        ig_steps=min(8, request.curve_ig_steps),
        ig_max_steps=request.curve_ig_steps,
        ig_tolerance=request.tolerance,
    )


def pair_curves(encoder: Encoder, request: AttributionRequest, first: bool) -> dict[str, dict[str, Any]]:
    """Text A's (``first``) or B's per-method record (curves, AOPCs, orders), per setting label.

    Raises:
        ConfigError: the text has no content tokens (only stopwords and punctuation): nothing to rank.
    """
    text, partner, key = (request.text_a, request.text_b, "A") if first else (request.text_b, request.text_a, "B")
    config = curves_config(encoder, request)
    content = content_text(encoder, text)
    if not content.positions:
        raise ConfigError(
            f"Text {key} ({text[:40]!r}) has no content tokens (only stopwords or punctuation): the deletion curves "
            "have nothing to remove. Give it a content word."
        )
    peak = checked_peak(encoder, request.peak_layer)
    settings = sides(encoder.loaded.has_adapter)
    vectors = pooled_vectors(encoder, [content.text, partner], list(settings.values()))
    pending = Pending(
        f"text:{key}",
        content,
        {label: vectors[flag][0] for label, flag in settings.items()},
        {label: vectors[flag][1] for label, flag in settings.items()},
    )
    return {label: records[0] for label, records in run_chunk(encoder, [pending], settings, config, peak).items()}
