"""Statistics over texts: paired mean differences with a percentile-bootstrap CI and Cohen's d_z (elementwise),
and bootstrap replicates of any per-text statistic.

``paired_stats`` serves every adapter-minus-base comparison of the attention report. ``text_resamples`` draws
the resamples of texts by a fixed seed, so two statistics computed on the same texts with the same resamples
(e.g. base and adapter rows of a clustering grid) are paired replicate by replicate: ``replicate_ci`` of their
replicates' difference is the paired difference's CI. Results are rounded for JSON.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
from jaxtyping import Float

from core.runtime.errors import ConfigError


@dataclass
class PairedStats:
    """Mean of a paired difference with a bootstrap CI over texts and a paired Cohen's d, elementwise."""

    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    cohens_d: np.ndarray
    n: int
    n_boot: int
    confidence: float

    def column(self, index: int) -> PairedStats:
        """The statistics of one entry of the last axis."""
        pick = (..., index)
        return PairedStats(
            self.mean[pick], self.low[pick], self.high[pick], self.cohens_d[pick], self.n, self.n_boot, self.confidence
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean": rounded(self.mean),
            "ci_low": rounded(self.low),
            "ci_high": rounded(self.high),
            "cohens_d": rounded(self.cohens_d),
            "n": self.n,
            "n_boot": self.n_boot,
            "confidence": self.confidence,
        }

    def top_cells(self, top_k: int) -> list[dict[str, Any]]:
        """The ``top_k`` entries with the largest absolute mean, as (layer[, head]) cells with CI and d."""
        order = np.argsort(-np.abs(self.mean), axis=None)[:top_k]
        cells = []
        for flat in order:
            index = np.unravel_index(flat, self.mean.shape)
            cell = {"layer": int(index[0])}
            if len(index) > 1:
                cell["head"] = int(index[1])
            cell.update(
                shift=round(float(self.mean[index]), 6),
                ci_low=round(float(self.low[index]), 6),
                ci_high=round(float(self.high[index]), 6),
                cohens_d=round(float(self.cohens_d[index]), 4),
            )
            cells.append(cell)
        return cells


def paired_stats(
    differences: Float[np.ndarray, "texts ..."], n_boot: int = 2000, confidence: float = 0.95, seed: int = 0
) -> PairedStats:
    """Percentile bootstrap over texts (the first axis) and d_z = mean / sd of the differences."""
    diffs = np.asarray(differences, dtype=np.float64)
    n = diffs.shape[0]
    if n < 2:
        raise ConfigError(f"Paired statistics need at least 2 texts, got {n}; compare more texts.")
    flat = diffs.reshape(n, -1)
    # Resample counts instead of indices: one (n_boot, n) @ (n, k) product for every element at once.
    means = _resample_counts(n, n_boot, seed) @ flat / n
    alpha = (1.0 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha], axis=0)
    mean = flat.mean(0)
    sd = flat.std(0, ddof=1)
    d = np.divide(mean, sd, out=np.zeros_like(mean), where=sd > 1e-12)
    shape = diffs.shape[1:]
    return PairedStats(
        mean.reshape(shape), low.reshape(shape), high.reshape(shape), d.reshape(shape), n, n_boot, confidence
    )


def text_resamples(n: int, n_boot: int = 200, seed: int = 0) -> np.ndarray:
    """(n_boot, n) counts: how often each of ``n`` texts is drawn in each bootstrap resample (rows sum to n).

    Deterministic in (n, n_boot, seed): statistics of the same texts made in separate runs share resamples, so
    their replicates pair. Raises ConfigError below 2 texts.
    """
    return _resample_counts(n, n_boot, seed).astype(np.int64)


@functools.lru_cache(maxsize=16)
def _resample_counts(n: int, n_boot: int, seed: int) -> Float[np.ndarray, "resamples texts"]:
    """The (n_boot, n) resample counts of ``seed``, drawn once per process and read-only: a report makes hundreds
    of statistics over the same texts, and the draw is most of each one's cost."""
    if n < 2:
        raise ConfigError(f"A bootstrap over texts needs at least 2 texts, got {n}; use more texts.")
    if n_boot < 1:
        raise ConfigError(f"n_boot must be at least 1, got {n_boot}.")
    counts = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)
    counts.flags.writeable = False
    return counts


def replicate_ci(replicates: Any, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates (NaN, NaN when there are none or any is NaN)."""
    values = np.asarray(replicates, dtype=np.float64)
    if values.size == 0 or np.isnan(values).any():
        return float("nan"), float("nan")
    alpha = (1.0 - confidence) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return float(low), float(high)


def centred_ci(point: float, replicates: Any, confidence: float = 0.95) -> tuple[float, float]:
    """``point`` ± half the width of the replicates' percentile interval: the replicates' spread, centred on the
    estimate. Where resampling shifts a statistic (V-measure runs higher on resampled texts, since duplicated
    texts look like purer clusters) the percentile interval would sit off the estimate; its width does not.
    NaN where ``replicate_ci`` is."""
    low, high = replicate_ci(replicates, confidence)
    half = (high - low) / 2
    return point - half, point + half


def mean_ci(values: Any, n_boot: int = 2000, confidence: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """Mean of per-text ``values`` with a percentile-bootstrap CI over texts: {mean, ci_low, ci_high, n, n_boot}."""
    data = np.asarray(values, dtype=np.float64).reshape(-1)
    low, high = replicate_ci(_resample_counts(len(data), n_boot, seed) @ data / len(data), confidence)
    return {"mean": float(data.mean()), "ci_low": low, "ci_high": high, "n": len(data), "n_boot": n_boot}


def rounded(array: np.ndarray, digits: int = 6) -> Any:
    """A JSON-ready nested list, rounded to ``digits``."""
    return np.round(np.asarray(array, dtype=np.float64), digits).tolist()
