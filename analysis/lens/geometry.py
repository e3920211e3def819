"""Geometry of an embedding space: what contrastive fine-tuning changes, base vs adapter on the same texts.

- anisotropy (Ethayarajh 2019): the mean cosine between the vectors of two different texts;
- effective rank (Roy & Vetterli 2007): exp of the entropy of the normalised singular values of the centred vectors;
- first principal component's share: the fraction of the centred variance along it;
- alignment and uniformity (Wang & Isola 2020) on unit vectors: ``E ||f(x) - f(y)||^2`` over positive pairs and
  ``log E exp(-2 ||f(a) - f(b)||^2)`` over pairs of different texts;
- linear CKA (Kornblith et al. 2019) between two representations of the same texts: 1 for a space with itself and
  under any orthogonal transform or isotropic scaling.

Differences come with percentile-bootstrap CIs over texts (or pairs): each resample recomputes the statistic on
both sides from the same resampled texts, so the CI is the paired one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from jaxtyping import Float

__all__ = [
    "alignment",
    "anisotropy",
    "bootstrap_difference",
    "bootstrap_value",
    "effective_rank",
    "gram",
    "linear_cka",
    "linear_cka_gram",
    "pc_share",
    "uniformity",
    "unit",
]


def unit(vectors: Float[np.ndarray, "n d"]) -> Float[np.ndarray, "n d"]:
    x = np.asarray(vectors, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def anisotropy(vectors: Float[np.ndarray, "n d"], weights: np.ndarray | None = None) -> float:
    """Mean cosine over pairs of different texts (every pair, not a sample: ``(|sum u|^2 - sum |u|^2)`` trick).

    ``weights`` (bootstrap counts) weigh each text; pairs of a text with its own copies are left out."""
    u = unit(vectors)
    w = np.ones(len(u)) if weights is None else np.asarray(weights, dtype=np.float64)
    s = (w[:, None] * u).sum(0)
    total = float(s @ s) - float((w**2).sum())  # minus every text paired with itself (and its copies)
    pairs = float(w.sum() ** 2 - (w**2).sum())
    return total / pairs if pairs > 0 else float("nan")


def _centred_singular_values(vectors: np.ndarray) -> np.ndarray:
    x = np.asarray(vectors, dtype=np.float64)
    from threadpoolctl import threadpool_limits

    # One BLAS thread: on a shared 2-core machine two threads waiting on each other made this ~3x slower; the
    # singular values are identical.
    with threadpool_limits(1):
        return np.linalg.svd(x - x.mean(0), compute_uv=False)


def effective_rank(vectors: Float[np.ndarray, "n d"]) -> float:
    """exp(entropy of the normalised singular values of the centred vectors): between 1 and min(n, d)."""
    s = _centred_singular_values(vectors)
    p = s / max(float(s.sum()), 1e-300)
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def pc_share(vectors: Float[np.ndarray, "n d"]) -> float:
    """Fraction of the centred variance along the first principal component."""
    s2 = _centred_singular_values(vectors) ** 2
    return float(s2[0] / max(float(s2.sum()), 1e-300))


def alignment(a: Float[np.ndarray, "n d"], b: Float[np.ndarray, "n d"], alpha: float = 2.0) -> float:
    """Wang & Isola's alignment of positive pairs ``(a[i], b[i])``: mean ``||f(a) - f(b)||^alpha`` on unit vectors
    (lower = positives closer)."""
    return float((np.linalg.norm(unit(a) - unit(b), axis=1) ** alpha).mean())


def uniformity(vectors: Float[np.ndarray, "n d"], t: float = 2.0) -> float:
    """Wang & Isola's uniformity: ``log`` of the mean of ``exp(-t ||f(x) - f(y)||^2)`` over pairs of different
    texts, on unit vectors (lower = more uniform on the sphere)."""
    u = unit(vectors)
    sq = np.clip(2.0 - 2.0 * (u @ u.T), 0.0, None)
    upper = np.triu_indices(len(u), k=1)
    return float(np.log(np.exp(-t * sq[upper]).mean()))


def gram(vectors: Float[np.ndarray, "n d"]) -> Float[np.ndarray, "n n"]:
    x = np.asarray(vectors, dtype=np.float64)
    return x @ x.T


def linear_cka_gram(k: np.ndarray, m: np.ndarray, index: np.ndarray | None = None) -> float:
    """Linear CKA from the two Gram matrices ``X X^T`` and ``Y Y^T`` (optionally of the resampled texts
    ``index``): HSIC with centred Grams, normalised."""
    if index is not None:
        k, m = k[np.ix_(index, index)], m[np.ix_(index, index)]
    kc = k - k.mean(0, keepdims=True) - k.mean(1, keepdims=True) + k.mean()
    mc = m - m.mean(0, keepdims=True) - m.mean(1, keepdims=True) + m.mean()
    hsic = float((kc * mc).sum())
    norm = float(np.sqrt((kc * kc).sum() * (mc * mc).sum()))
    return hsic / norm if norm > 0 else float("nan")


def linear_cka(x: Float[np.ndarray, "n d1"], y: Float[np.ndarray, "n d2"]) -> float:
    """Linear CKA between two representations of the same ``n`` texts (Kornblith et al. 2019)."""
    if len(x) != len(y):
        raise ValueError(f"CKA compares representations of the same texts: {len(x)} vs {len(y)} rows")
    return linear_cka_gram(gram(x), gram(y))


def _interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = (1.0 - confidence) / 2
    finite = samples[np.isfinite(samples)]
    if not len(finite):
        return float("nan"), float("nan")
    low, high = np.quantile(finite, [alpha, 1 - alpha])
    return float(low), float(high)


def bootstrap_value(
    statistic: Callable[[np.ndarray], float],
    n: int,
    n_boot: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
    recentre: bool = False,
) -> dict[str, Any]:
    """``statistic(index)`` on all ``n`` items and a percentile-bootstrap CI over resampled items (``recentre``:
    shifted by the full-sample value minus the resamples' mean, as in :func:`bootstrap_difference`)."""
    rng = np.random.default_rng(seed)
    value = statistic(np.arange(n))
    samples = np.array([statistic(rng.integers(0, n, n)) for _ in range(n_boot)])
    low, high = _interval(samples, confidence)
    if recentre and np.isfinite(samples).any():
        shift = float(value) - float(np.nanmean(samples))
        low, high = low + shift, high + shift
    return {"value": round(value, 6), "ci_low": round(low, 6), "ci_high": round(high, 6), "n": n, "n_boot": n_boot}


def bootstrap_difference(
    statistic: Callable[[np.ndarray, bool], float],
    n: int,
    n_boot: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
    recentre: bool = False,
) -> dict[str, Any]:
    """``statistic(index, adapter)`` for base and adapter and their difference (adapter minus base), each with
    a paired percentile-bootstrap CI: both sides are computed on the same resampled items.

    ``recentre`` shifts each interval by (full-sample value - mean of the resamples): for set-level statistics
    (effective rank, first-PC share) a resample's duplicated texts bias the value itself, not only its spread.
    """
    rng = np.random.default_rng(seed)
    everything = np.arange(n)
    base, tuned = statistic(everything, False), statistic(everything, True)
    samples = np.zeros((n_boot, 2))
    for b in range(n_boot):
        index = rng.integers(0, n, n)
        samples[b] = statistic(index, False), statistic(index, True)
    out: dict[str, Any] = {"n": n, "n_boot": n_boot, "confidence": confidence}
    for name, value, column in (
        ("base", base, samples[:, 0]),
        ("adapter", tuned, samples[:, 1]),
        ("difference", tuned - base, samples[:, 1] - samples[:, 0]),
    ):
        low, high = _interval(column, confidence)
        if recentre:
            shift = float(value) - float(np.nanmean(column))
            low, high = low + shift, high + shift
        out[name] = {"value": round(float(value), 6), "ci_low": round(low, 6), "ci_high": round(high, 6)}
    out["interval"] = "percentile, re-centred on the full-sample value" if recentre else "percentile"
    return out
