"""The vocabulary attention and attribution share: token categories, the query token, one text's attention.

A key token's category is its ``core.encoding.roles`` role, except position 0, which is the ``sink``: with a
BOS (Llama tokenizers) that is the BOS; SmolLM2's tokenizer adds none, and its first prompt token
takes the sink's role, so position 0 is the sink either way. ``RENORMALISED`` are the categories
left when sink and special tokens are dropped and the rest rescaled to sum to 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
from jaxtyping import Float, Int

from core.encoding.encoder import PreparedText
from core.encoding.roles import Role
from core.runtime.errors import ConfigError

# ``first_copy`` (echo's first copy of the text) and ``placeholder`` (token prepending's slot) only occur
# under those methods (core.encoding.methods); under plain their shares are 0.
Category = Literal["sink", "special", "prompt", "content", "function", "punct", "first_copy", "placeholder"]
CATEGORIES: tuple[str, ...] = get_args(Category)
RENORMALISED: tuple[str, ...] = ("prompt", "content", "function", "punct", "first_copy", "placeholder")
QueryToken = Literal["last", "eos"]
QUERY_TOKENS: tuple[str, ...] = get_args(QueryToken)
_ROLE_CATEGORY = {
    Role.SPECIAL: "special",
    Role.PROMPT: "prompt",
    Role.CONTENT: "content",
    Role.FUNCTION: "function",
    Role.PUNCT: "punct",
    Role.FIRST_COPY: "first_copy",
    Role.PLACEHOLDER: "placeholder",
}

Rows = Float[np.ndarray, "layers heads keys"]


def token_categories(item: PreparedText, query: int) -> Int[np.ndarray, " keys"]:
    """Category index of each key token ``0..query`` (position 0 is the sink)."""
    categories = [CATEGORIES.index(_ROLE_CATEGORY[Role(role)]) for role in item.roles[: query + 1]]
    categories[0] = CATEGORIES.index("sink")
    return np.asarray(categories, dtype=np.int64)


def query_index(item: PreparedText, token: QueryToken) -> int:
    """Position of the query (pooled) token inside the text's own (unpadded) sequence."""
    if token == "last":
        return item.length - 1
    if token == "eos":
        if item.eos_index < 0:
            raise ConfigError("The 'eos' query token needs a tokenizer with an EOS token; use --token last.")
        return item.eos_index
    raise ConfigError(f"Unknown query token {token!r}; choose one of: {', '.join(QUERY_TOKENS)}.")


def kept_mask(categories: Int[np.ndarray, " keys"]) -> Float[np.ndarray, " keys"]:
    """1.0 for keys in ``RENORMALISED`` categories, 0.0 for the sink and special tokens."""
    return np.isin(categories, [CATEGORIES.index(c) for c in RENORMALISED]).astype(np.float64)


def sides(has_adapter: bool) -> dict[str, bool]:
    """The settings compared, label -> ``use_adapter``: base alone, or base and adapter."""
    return {"base": False, "adapter": True} if has_adapter else {"base": False}


@dataclass
class TextAttention:
    """The query token's attention in one text: ``rows`` is (layers, heads, keys) over keys ``0..query``."""

    tokens: list[str]
    categories: Int[np.ndarray, " keys"]
    rows: Rows
    maps: Float[np.ndarray, "layers heads keys keys"] | None = None  # full maps when kept

    def weights(
        self, layer: int = -1, head: int | None = None, renormalise: bool = False
    ) -> Float[np.ndarray, " keys"]:
        """One layer's row (mean over heads unless ``head``), optionally without sink and specials."""
        layers, heads = self.rows.shape[:2]
        if not -layers <= layer < layers:
            raise ConfigError(f"Layer {layer} is out of range: use 0..{layers - 1} or -{layers}..-1.")
        if head is not None and not 0 <= head < heads:
            raise ConfigError(f"Head {head} is out of range: this model has {heads} heads, so use 0..{heads - 1}.")
        row = self.rows[layer].mean(0) if head is None else self.rows[layer, head]
        if renormalise:
            row = row * kept_mask(self.categories)
            row = row / max(float(row.sum()), 1e-12)
        return row
