"""Where the query (pooled) token looks: attention shares by token category, base vs adapter.

For each text, layer and head, the query token's attention row is split into the categories of
``analysis.categories`` (sink, special, prompt, content, function, punct). Shares are reported raw
(all six sum to 1) and renormalised over the four non-sink, non-special categories. The shift is
adapter minus base on the same texts; corpus statistics (``analysis.stats``) resample texts.

Under a method (``core.encoding.methods``, the encoder's ``method``) two more categories carry mass: ``first_copy``
(echo: how much the pooled token reads the text's first copy rather than the second) and ``placeholder``
(token prepending: how much it reads the slot that carries the last token's earlier state); under plain both
are 0. ``share_cis`` gives every category's share with a bootstrap CI over the corpus.

This module holds the measurements; ``analysis.attention.report`` runs the whole report from an
``AttentionReportConfig``, and ``python -m analysis.attention`` is its CLI (``--help`` lists the options).
May import: ``core``, ``analysis.attribution``, ``analysis.categories``, ``analysis.plots``, ``analysis.stats``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from jaxtyping import Float

from analysis.categories import (
    CATEGORIES,
    RENORMALISED,
    Category,
    QueryToken,
    TextAttention,
    kept_mask,
    query_index,
    sides,
    token_categories,
)
from analysis.stats import paired_stats, rounded
from core.encoding.capture import CAPTURE_MODES, CaptureMode, capture_attention, check_eager, resolve_layers
from core.encoding.encoder import Encoder
from core.encoding.pooling import LayerChoice, PoolingMode
from core.runtime.errors import ConfigError

PAPER_EXAMPLE = "a man is driving a car"

Shares = Float[np.ndarray, "texts layers heads categories"]


@dataclass
class CapturedCorpus:
    """Attention of the pooled token for a list of texts, from one model setting (base or adapter)."""

    texts: list[str]
    items: list[TextAttention]
    embeddings: Float[np.ndarray, "texts hidden"]  # the encoder's pooled vectors from the same forward
    use_adapter: bool
    mode: CaptureMode
    token: QueryToken
    layers: list[int]
    seconds: float
    n_tokens: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def texts_per_second(self) -> float:
        return len(self.texts) / max(self.seconds, 1e-9)


def capture_corpus(
    encoder: Encoder,
    texts: Sequence[str],
    *,
    use_adapter: bool,
    mode: CaptureMode = "rows",
    token: QueryToken = "last",
    layers: Sequence[int] | None = None,
    keep_maps: bool = False,
) -> CapturedCorpus:
    """Run the encoder over ``texts`` once, capturing the pooled token's attention in every layer and head.

    ``keep_maps`` (full mode only) also keeps each text's full (layers, heads, keys, keys) maps: memory grows
    with the square of the length, so keep it for a few texts.
    """
    if mode not in CAPTURE_MODES:
        raise ConfigError(f"Unknown capture mode {mode!r}; choose one of: {', '.join(CAPTURE_MODES)}.")
    if keep_maps and mode != "full":
        raise ConfigError("keep_maps needs mode='full'.")
    backbone = encoder.loaded.backbone
    check_eager(backbone)
    layer_list = resolve_layers(backbone, layers)
    prepared = encoder.prepare(list(texts))
    queries = [query_index(item, token) for item in prepared]
    plan = encoder.plan()
    items: list[TextAttention | None] = [None] * len(prepared)
    embeddings = np.zeros((len(prepared), encoder.dim), dtype=np.float32)
    started = time.perf_counter()
    with torch.inference_mode(), encoder.loaded.adapter_enabled(use_adapter):
        for group in encoder.batches(prepared):
            batch = encoder.collate([prepared[i] for i in group])
            query = batch["start"] + torch.tensor([queries[i] for i in group])
            with capture_attention(backbone, layer_list, mode, query) as captured:
                states = encoder.forward(batch, plan)
            embeddings[group] = plan.poolings[0](states).cpu().numpy()
            for row, index in enumerate(group):
                start, q = int(batch["start"][row]), queries[index]
                keys = slice(start, start + q + 1)
                if mode == "full":
                    maps = np.stack([captured[layer][row, :, keys, keys].numpy() for layer in layer_list])
                    rows = maps[:, :, q, :]
                else:
                    rows = np.stack([captured[layer][row, :, keys].numpy() for layer in layer_list])
                    maps = None
                items[index] = TextAttention(
                    tokens=_token_strings(encoder, prepared[index].input_ids[: q + 1]),
                    categories=token_categories(prepared[index], q),
                    rows=np.ascontiguousarray(rows),
                    maps=maps if keep_maps else None,
                )
    seconds = time.perf_counter() - started
    return CapturedCorpus(
        texts=list(texts),
        items=[item for item in items if item is not None],
        embeddings=embeddings,
        use_adapter=use_adapter,
        mode=mode,
        token=token,
        layers=layer_list,
        seconds=seconds,
        n_tokens=sum(len(item.input_ids) for item in prepared),
    )


def _token_strings(encoder: Encoder, ids: Sequence[int]) -> list[str]:
    return [encoder.tokenizer.decode([i]) for i in ids]


# ----- per-text measures


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


# ----- one text, as the Attention page shows it


def query_token_for(pooling: PoolingMode) -> QueryToken:
    """The token whose attention is shown: the appended EOS for ``eos`` pooling, else the last token."""
    return "eos" if pooling == "eos" else "last"


def query_title(pooling: PoolingMode, attention_layer: int = -1) -> str:
    """What the shown attention row is, in words: the pooled token only where pooling reads one token."""
    if pooling == "eos":
        return "Attention of the appended EOS token (the pooled token)"
    if pooling == "last":
        return "Attention of the last token (the pooled token)"
    if pooling == "attention":
        return f"Attention of the last token (its layer {attention_layer} row weights the pooling)"
    return f"Attention of the last token ({pooling} pooling reads every token, not one)"


def pooled_attention_layers(layer: LayerChoice, num_hidden_states: int) -> tuple[int, ...]:
    """The 0-based decoder layers whose outputs are the pooled hidden states (none for the embeddings, 0)."""
    return tuple(index - 1 for index in layer.indices(num_hidden_states) if index > 0)


@dataclass
class AttentionView:
    """One text's query-token attention per setting (label -> array), ready to draw."""

    title: str
    tokens: list[str]
    categories: list[str]
    matrices: dict[str, Float[np.ndarray, "layers keys"]]
    role_shares: dict[str, Float[np.ndarray, "layers categories"]]
    pooled_layers: tuple[int, ...]  # decoder layers whose outputs the encoder pools
    seconds: float

    @property
    def difference(self) -> Float[np.ndarray, "layers keys"] | None:
        """Adapter minus base, where an adapter is loaded."""
        if "adapter" not in self.matrices:
            return None
        return self.matrices["adapter"] - self.matrices["base"]


def attention_view(encoder: Encoder, text: str, head: int | None = None, renormalise: bool = False) -> AttentionView:
    """The encoder's query token's attention in ``text``, token x layer, for base (and adapter where loaded)."""
    token = query_token_for(encoder.pooling)
    started = time.perf_counter()
    captured = {
        label: capture_corpus(encoder, [text], use_adapter=use_adapter, token=token).items[0]
        for label, use_adapter in sides(encoder.loaded.has_adapter).items()
    }
    seconds = time.perf_counter() - started
    first = captured["base"]
    return AttentionView(
        title=query_title(encoder.pooling, encoder.attention_layer),
        tokens=first.tokens,
        categories=[CATEGORIES[c] for c in first.categories],
        matrices={label: layer_token_matrix(item, head, renormalise) for label, item in captured.items()},
        role_shares={label: role_shares_per_layer(item, head, renormalise) for label, item in captured.items()},
        pooled_layers=pooled_attention_layers(encoder.layer, encoder.num_hidden_states),
        seconds=seconds,
    )
