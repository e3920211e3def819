"""One text's query-token attention, as the Attention page shows it."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from jaxtyping import Float

from analysis.attention.capture import capture_corpus
from analysis.attention.measures import layer_token_matrix, role_shares_per_layer
from analysis.categories import CATEGORIES, QueryToken, sides
from core.encoding.encoder import Encoder
from core.encoding.pooling import LayerChoice, PoolingMode

PAPER_EXAMPLE = "a man is driving a car"

__all__ = [
    "PAPER_EXAMPLE",
    "AttentionView",
    "attention_view",
    "pooled_attention_layers",
    "query_title",
    "query_token_for",
]


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
