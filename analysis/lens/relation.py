"""How key-token alignment relates to the attention shift, text by text.

For each corpus text: the adapter-minus-base change of its final-layer key-token hit rate (the lens) and of the
pooled token's attention share on the text's content tokens (renormalised without sink and special tokens, mean
over heads, over the adapted layers and over all layers; ``analysis.attention``, measured on the same texts).
The relation is Spearman's rho between the two changes, with a percentile-bootstrap CI over texts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from analysis.categories import CATEGORIES
from analysis.lens.corpus import CorpusLens
from analysis.lens.geometry import bootstrap_value

__all__ = ["attention_relation", "spearman"]


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho; NaN where either side is constant."""
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def attention_relation(
    encoder,
    texts: Sequence[str],
    lenses: Mapping[str, CorpusLens],
    final_index: int,
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Spearman's rho (with bootstrap CI) between each text's alignment change and content-attention change, over
    ``texts`` (the first ``len(texts)`` texts of the corpus ``lenses`` were computed on)."""
    from analysis.attention import capture_corpus, role_shares

    content = CATEGORIES.index("content")
    shares = {}
    seconds = 0.0
    for name, use_adapter in (("base", False), ("adapter", True)):
        corpus = capture_corpus(encoder, texts, use_adapter=use_adapter)
        shares[name] = role_shares(corpus, renormalise=True)[..., content].mean(2)  # (texts, layers)
        seconds += corpus.seconds
    shift = shares["adapter"] - shares["base"]
    adapted = max(encoder.loaded.adapter_free_layers, 0)
    rows = slice(0, len(texts))
    alignment_shift = (
        lenses["adapter"].measures["raw"]["hit_rate"][rows, -1] - lenses["base"].measures["raw"]["hit_rate"][rows, -1]
    )
    keep = np.isfinite(alignment_shift)
    out: dict[str, Any] = {
        "alignment_measure": "final-layer hit rate (raw lens), adapter minus base",
        "attention_measure": "renormalised content share of the pooled token, adapter minus base",
        "n": int(keep.sum()),
        "adapted_layers": list(range(adapted, final_index)),
        "capture_seconds": round(seconds, 1),
        "content_share_shift_mean": {
            "adapted_layers": round(float(shift[:, adapted:].mean()), 6),
            "all_layers": round(float(shift.mean()), 6),
        },
    }
    for label, columns in (("adapted_layers", slice(adapted, None)), ("all_layers", slice(None))):
        attention = shift[:, columns].mean(1)[keep]
        aligned = alignment_shift[keep]
        out[f"spearman_{label}"] = bootstrap_value(
            lambda rows, a=attention, b=aligned: spearman(a[rows], b[rows]), len(aligned), n_boot=min(n_boot, 500),
            seed=seed,
        )  # fmt: skip
    return out
