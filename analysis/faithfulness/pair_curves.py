"""Deletion and insertion curves of one text of a pair, every explanation method and the random floor.

The faithfulness run's own pieces (``analysis.faithfulness``: rankers, perturbation, ``run_chunk``) on one text, its
partner the pair's other text, with the step caps of an attribution job: the IG ranker's cap is the job's
``curve_ig_steps`` and the random floor has ``random_draws`` orders, so the verdict
(:mod:`analysis.faithfulness.verdict`) has a spread to compare each method against.
"""

from __future__ import annotations

from typing import Any

from analysis.categories import sides
from analysis.faithfulness.config import METHODS, FaithfulnessConfig
from analysis.faithfulness.perturbation import content_text, pooled_vectors
from analysis.faithfulness.records import Pending
from analysis.faithfulness.report import checked_peak, run_chunk
from core.encoding.encoder import Encoder
from core.runtime.errors import ConfigError

__all__ = ["curves_config", "pair_curves"]


def curves_config(
    encoder: Encoder, k: int, random_draws: int, peak_layer: int | None, ig_max_steps: int, tolerance: float
) -> FaithfulnessConfig:
    """The faithfulness settings of a job's curves: all methods, its random draws, its IG cap."""
    return FaithfulnessConfig(
        model=encoder.loaded.name,
        k=k,
        methods=METHODS,
        random_seeds=random_draws,
        peak_layer=peak_layer,
        ig_steps=min(8, ig_max_steps),
        ig_max_steps=ig_max_steps,
        ig_tolerance=tolerance,
    )


def pair_curves(
    encoder: Encoder,
    text: str,
    partner: str,
    key: str,
    *,
    k: int = 5,
    random_draws: int = 5,
    peak_layer: int | None = None,
    ig_max_steps: int = 8,
    tolerance: float = 0.05,
) -> dict[str, dict[str, Any]]:
    """``text``'s per-method record (curves, AOPCs, orders) against ``partner``, per setting label.

    ``key`` names the text in the record and seeds its random orders (a job uses "A" and "B").

    Raises:
        ConfigError: the text has no content tokens (only stopwords and punctuation): nothing to rank.
    """
    config = curves_config(encoder, k, random_draws, peak_layer, ig_max_steps, tolerance)
    content = content_text(encoder, text)
    if not content.positions:
        raise ConfigError(
            f"Text {key} ({text[:40]!r}) has no content tokens (only stopwords or punctuation): the deletion curves "
            "have nothing to remove. Give it a content word."
        )
    peak = checked_peak(encoder, peak_layer)
    settings = sides(encoder.loaded.has_adapter)
    vectors = pooled_vectors(encoder, [content.text, partner], list(settings.values()))
    pending = Pending(
        f"text:{key}",
        content,
        {label: vectors[flag][0] for label, flag in settings.items()},
        {label: vectors[flag][1] for label, flag in settings.items()},
    )
    return {label: records[0] for label, records in run_chunk(encoder, [pending], settings, config, peak).items()}
