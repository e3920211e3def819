"""Measures of captured attention: shares by token category, their CIs, entropy, the base summary and
the adapter-minus-base shift, and one text's token bars and per-layer matrices."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from jaxtyping import Float

from analysis.attention.capture import CapturedCorpus
from analysis.categories import CATEGORIES, RENORMALISED, Category, TextAttention, kept_mask
from analysis.stats import mean_ci, paired_stats, rounded
from core.runtime.errors import ConfigError

Shares = Float[np.ndarray, "texts layers heads categories"]

__all__ = [
    "METHOD_CATEGORIES",
    "Shares",
    "attention_entropy",
    "layer_token_matrix",
    "pooled_share",
    "pooled_share_summary",
    "role_shares",
    "role_shares_per_layer",
    "sentence_pooled_shares",
    "share_cis",
    "shift_report",
    "summarise_base",
    "token_bars",
]


def role_shares(corpus: CapturedCorpus, renormalise: bool = False) -> Shares:
    """Attention mass of the pooled token on each category: (texts, layers, heads, categories).

    ``renormalise`` drops sink and special tokens and rescales the rest to sum to 1 (their columns are 0).
    """
    out = np.zeros((len(corpus.items), *corpus.items[0].rows.shape[:2], len(CATEGORIES)), dtype=np.float64)
    for index, item in enumerate(corpus.items):
        onehot = np.eye(len(CATEGORIES))[item.categories]  # (keys, categories)
        shares = item.rows.astype(np.float64) @ onehot
        if renormalise:
            shares[..., [CATEGORIES.index("sink"), CATEGORIES.index("special")]] = 0.0
            shares /= np.maximum(shares.sum(-1, keepdims=True), 1e-12)
        out[index] = shares
    return out


# The category a method adds, whose share says what the method changes in where the pooled token looks.
METHOD_CATEGORIES: dict[str, Category] = {"echo": "first_copy", "tp": "placeholder"}


def share_cis(
    corpus: CapturedCorpus, n_boot: int = 2000, confidence: float = 0.95, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Raw share of each category (heads averaged) with a bootstrap CI over texts: per layer, and averaged
    over layers (``all_layers``). Category -> {"per_layer": stats, "all_layers": stats}."""
    shares = role_shares(corpus).mean(2)  # (texts, layers, categories)
    per_layer = paired_stats(shares, n_boot, confidence, seed)
    overall = paired_stats(shares.mean(1), n_boot, confidence, seed)
    out = {}
    for index, name in enumerate(CATEGORIES):
        stats = {"per_layer": per_layer.column(index).to_dict(), "all_layers": overall.column(index).to_dict()}
        for entry in stats.values():
            entry.pop("cohens_d")  # a share is not a difference: d would mean nothing here
        out[name] = stats
    return out


def pooled_share(
    corpus: CapturedCorpus, layers: Sequence[int], category: Category = "content", renormalise: bool = True
) -> Float[np.ndarray, " texts"]:
    """Per text, the pooled token's attention share on ``category``, averaged over heads and over ``layers`` (the
    0-based decoder layers whose outputs the encoder pools). ``renormalise``: sink and special tokens left out.

    Raises ConfigError for no layers (layer 0 pools the input embeddings: no attention made them), a layer out of
    range, or an unknown category.
    """
    if category not in CATEGORIES:
        raise ConfigError(f"Unknown category {category!r}; choose one of {', '.join(CATEGORIES)}.")
    depth = corpus.items[0].rows.shape[0]
    if not layers:
        raise ConfigError("No pooled attention layer: layer 0 pools the input embeddings. Choose a layer above 0.")
    if any(not 0 <= layer < depth for layer in layers):
        raise ConfigError(f"Layers {list(layers)} are not all within the {depth} captured layers.")
    shares = role_shares(corpus, renormalise)[..., CATEGORIES.index(category)]  # (texts, layers, heads)
    return shares[:, list(layers)].mean((1, 2))


def pooled_share_summary(
    base: CapturedCorpus,
    adapter: CapturedCorpus | None,
    layers: Sequence[int],
    category: Category = "content",
    renormalise: bool = True,
    n_boot: int = 2000,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Rows for a table: the mean :func:`pooled_share` of ``base``, of ``adapter`` and their paired difference
    (``adapter − base``), each with a 95% bootstrap CI over texts and n; one text gives the values alone (CI NaN).

    Raises ConfigError when the two captures are not of the same texts and token (and as :func:`pooled_share`).
    """
    if adapter is not None and (base.texts != adapter.texts or base.token != adapter.token):
        raise ConfigError("Base and adapter captures must cover the same texts with the same query token.")
    sides = {"base": pooled_share(base, layers, category, renormalise)}
    if adapter is not None:
        sides["adapter"] = pooled_share(adapter, layers, category, renormalise)
        sides["adapter − base"] = sides["adapter"] - sides["base"]
    rows = []
    for side, values in sides.items():
        if len(values) > 1:
            stats = mean_ci(values, n_boot, seed=seed)
            low, high = stats["ci_low"], stats["ci_high"]
        else:
            low = high = float("nan")
        rows.append({"side": side, "share": float(values.mean()), "ci_low": low, "ci_high": high, "n": len(values)})
    return rows


def sentence_pooled_shares(
    shares: dict[str, Float[np.ndarray, "layers categories"]], layers: Sequence[int], category: Category = "content"
) -> list[dict[str, Any]]:
    """One text's share on ``category`` averaged over the pooled ``layers``, per side of ``shares`` (e.g. an
    ``AttentionView``'s ``role_shares``: base, adapter), plus ``adapter − base`` where both are there; n = 1."""
    if not layers:
        raise ConfigError("No pooled attention layer: layer 0 pools the input embeddings. Choose a layer above 0.")
    column = CATEGORIES.index(category)
    values = {side: float(np.asarray(matrix)[list(layers), column].mean()) for side, matrix in shares.items()}
    if {"base", "adapter"} <= set(values):
        values["adapter − base"] = values["adapter"] - values["base"]
    nan = float("nan")
    return [{"side": side, "share": v, "ci_low": nan, "ci_high": nan, "n": 1} for side, v in values.items()]


def attention_entropy(corpus: CapturedCorpus, renormalise: bool = False) -> Float[np.ndarray, "texts layers heads"]:
    """Entropy (nats) of each attention row; ``renormalise`` first drops sink and special tokens."""
    out = np.zeros((len(corpus.items), *corpus.items[0].rows.shape[:2]), dtype=np.float64)
    for index, item in enumerate(corpus.items):
        rows = item.rows.astype(np.float64)
        if renormalise:
            rows = rows * kept_mask(item.categories)
            rows = rows / np.maximum(rows.sum(-1, keepdims=True), 1e-12)
        out[index] = -(rows * np.log(np.clip(rows, 1e-30, None))).sum(-1)
    return out


def summarise_base(corpus: CapturedCorpus) -> dict[str, Any]:
    """Mean shares and entropy per layer (heads averaged) and per layer and head, for one setting."""
    raw, renorm = role_shares(corpus), role_shares(corpus, renormalise=True)
    entropy, entropy_renorm = attention_entropy(corpus), attention_entropy(corpus, renormalise=True)
    return {
        "shares_per_layer": _by_category(raw.mean((0, 2))),
        "shares_renormalised_per_layer": _by_category(renorm.mean((0, 2)), RENORMALISED),
        "shares_per_layer_head": _by_category(raw.mean(0)),
        "shares_renormalised_per_layer_head": _by_category(renorm.mean(0), RENORMALISED),
        "entropy_per_layer": rounded(entropy.mean((0, 2))),
        "entropy_renormalised_per_layer": rounded(entropy_renorm.mean((0, 2))),
        "entropy_per_layer_head": rounded(entropy.mean(0)),
    }


def _by_category(array: np.ndarray, categories: Sequence[str] = CATEGORIES) -> dict[str, Any]:
    return {name: rounded(array[..., CATEGORIES.index(name)]) for name in categories}


def shift_report(
    base: CapturedCorpus,
    adapter: CapturedCorpus,
    *,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    focus: Category = "content",
    top_k: int = 10,
) -> dict[str, Any]:
    """Adapter minus base: per layer (heads averaged) and per layer and head, with CIs and effect sizes.

    ``focus`` (a renormalised category) ranks the layers and heads that moved most.
    """
    if base.texts != adapter.texts or base.token != adapter.token:
        raise ConfigError("Base and adapter captures must cover the same texts with the same query token.")
    if focus not in RENORMALISED:
        raise ConfigError(f"focus must be one of {', '.join(RENORMALISED)}, got {focus!r}.")
    out: dict[str, Any] = {"focus": focus, "n_texts": len(base.texts)}
    for label, renorm in (("raw", False), ("renormalised", True)):
        diff = role_shares(adapter, renorm) - role_shares(base, renorm)  # (texts, layers, heads, categories)
        names = RENORMALISED if renorm else CATEGORIES
        columns = [CATEGORIES.index(name) for name in names]
        per_layer = paired_stats(diff.mean(2)[..., columns], n_boot, confidence, seed)
        out[f"per_layer_{label}"] = {name: per_layer.column(j).to_dict() for j, name in enumerate(names)}
        if renorm:
            focus_diff = diff[..., CATEGORIES.index(focus)]  # (texts, layers, heads)
            per_head = paired_stats(focus_diff, n_boot, confidence, seed)
            out["per_layer_head_focus"] = per_head.to_dict()
            out["top_heads"] = per_head.top_cells(top_k)
            layer_stats = paired_stats(focus_diff.mean(2), n_boot, confidence, seed)
            out["top_layers"] = layer_stats.top_cells(top_k)
            # Total variation between base and adapter category distributions: movement in any direction.
            tv = 0.5 * np.abs(diff.mean(2)[..., columns]).sum(-1)
            out["total_variation_per_layer"] = rounded(tv.mean(0))
    entropy_diff = attention_entropy(adapter) - attention_entropy(base)
    out["entropy_shift_per_layer"] = paired_stats(entropy_diff.mean(2), n_boot, confidence, seed).to_dict()
    return out


def token_bars(
    base: TextAttention, adapter: TextAttention | None, layer: int = -1, head: int | None = None
) -> dict[str, Any]:
    """Per-token attention of the pooled token in one layer, base vs adapter (raw and renormalised)."""
    data: dict[str, Any] = {
        "tokens": base.tokens,
        "categories": [CATEGORIES[c] for c in base.categories],
        "layer": layer % base.rows.shape[0],
        "head": head,
        "base": rounded(base.weights(layer, head)),
        "base_renormalised": rounded(base.weights(layer, head, renormalise=True)),
    }
    if adapter is not None:
        data["adapter"] = rounded(adapter.weights(layer, head))
        data["adapter_renormalised"] = rounded(adapter.weights(layer, head, renormalise=True))
    return data


def layer_token_matrix(
    item: TextAttention, head: int | None = None, renormalise: bool = False
) -> Float[np.ndarray, "layers keys"]:
    """The pooled token's attention over the keys in every layer (mean over heads unless ``head``)."""
    return np.stack([item.weights(layer, head, renormalise) for layer in range(item.rows.shape[0])])


def role_shares_per_layer(
    item: TextAttention, head: int | None = None, renormalise: bool = False
) -> Float[np.ndarray, "layers categories"]:
    """Attention mass on each category per layer for one text (columns in ``CATEGORIES`` order)."""
    matrix = layer_token_matrix(item, head, renormalise)
    return np.stack([matrix[:, item.categories == c].sum(1) for c in range(len(CATEGORIES))], axis=1)
