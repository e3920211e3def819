"""Pooling: from one forward pass's token states to one vector per text.

Every mode reads the same ``TokenStates`` so one forward serves any number of (mode, layer)
pairs. The forward always runs on the tokenizer's own encoding of the wrapped text with one EOS
token appended: in a causal model the appended token cannot change the states before it, so
``last`` and ``mean`` see exactly the unextended sequence while ``eos`` reads the appended token.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from core.runtime.errors import ConfigError

PoolingMode = Literal["mean", "last", "eos", "weighted", "attention", "text_mean"]
POOLING_MODES: tuple[str, ...] = get_args(PoolingMode)
POOLING_DESCRIPTIONS: dict[str, str] = {
    "mean": "mean over all tokens of the wrapped text (the appended EOS excluded)",
    "last": "state of the last token of the wrapped text",
    "eos": "state of an EOS token appended after the wrapped text",
    "weighted": "position-weighted mean (later tokens weigh more, as in SGPT)",
    "attention": "mean over the text's tokens weighted by the last token's attention to them",
    "text_mean": "mean over the text's tokens only (prompt and special tokens excluded)",
}
# Modes that need the bidirectional-safe sequence only (no appended EOS, no last-token semantics).
ENCODER_POOLING_MODES = ("mean", "text_mean")


@dataclass(frozen=True)
class LayerChoice:
    """Which hidden states to pool: one index (``-1`` = final, normed output; ``0`` = embeddings)
    or the mean of the last ``last_k`` layer outputs."""

    index: int = -1
    last_k: int | None = None

    @classmethod
    def parse(cls, spec: int | str | LayerChoice) -> LayerChoice:
        if isinstance(spec, LayerChoice):
            return spec
        if isinstance(spec, int) and not isinstance(spec, bool):
            return cls(index=spec)
        if isinstance(spec, str):
            text = spec.strip().lower()
            if re.fullmatch(r"-?\d+", text):
                return cls(index=int(text))
            match = re.fullmatch(r"last-?(\d+)", text)
            if match and int(match.group(1)) >= 1:
                return cls(last_k=int(match.group(1)))
        raise ConfigError(f"Bad layer {spec!r}: use an index such as -1, 0 or 12, or 'lastK' (mean of last K).")

    def indices(self, num_hidden_states: int) -> tuple[int, ...]:
        """Non-negative indices into ``hidden_states`` (length = layers + 1); validated."""
        n = num_hidden_states
        if self.last_k is not None:
            if self.last_k > n - 1:
                raise ConfigError(f"Layer 'last{self.last_k}' asks for more layers than the model has ({n - 1}).")
            return tuple(range(n - self.last_k, n))
        if not -n <= self.index < n:
            raise ConfigError(
                f"Layer {self.index} is out of range: this model has {n - 1} layers, so use "
                f"0..{n - 1} (0 = embeddings) or -{n}..-1."
            )
        return (self.index % n,)

    def __str__(self) -> str:
        return f"last{self.last_k}" if self.last_k is not None else str(self.index)


@dataclass
class TokenStates:
    """What one forward pass yields for a padded batch.

    ``hidden`` maps a hidden-state index to its states; ``length`` counts the tokens of the
    wrapped text (BOS included, appended EOS excluded); ``eos_index`` is the appended EOS's
    position (``-1`` where none was appended); ``text_mask`` marks tokens of the user's text;
    ``attention_rows`` maps a decoder layer (0-based) to the last token's attention, mean over heads.
    ``pooled_start``/``pooled_length`` narrow what ``mean``, ``last`` and ``weighted`` read (echo's
    second copy, core.encoding.methods); ``None`` means the whole wrapped text.
    """

    num_hidden_states: int
    hidden: dict[int, Float[Tensor, "batch seq hidden"]]
    start: Int[Tensor, " batch"]
    length: Int[Tensor, " batch"]
    eos_index: Int[Tensor, " batch"]
    text_mask: Bool[Tensor, "batch seq"]
    attention_rows: dict[int, Float[Tensor, "batch seq"]]
    pooled_start: Int[Tensor, " batch"] | None = None
    pooled_length: Int[Tensor, " batch"] | None = None

    def pooled_span(self) -> tuple[Int[Tensor, " batch"], Int[Tensor, " batch"]]:
        """First pooled position and pooled token count per text."""
        if self.pooled_start is None or self.pooled_length is None:
            return self.start, self.length
        return self.pooled_start, self.pooled_length

    def sequence_mask(self) -> Bool[Tensor, "batch seq"]:
        """The pooled tokens: the wrapped text (appended EOS excluded), or the method's pooled span."""
        start, length = self.pooled_span()
        positions = torch.arange(self.text_mask.shape[1], device=self.text_mask.device)
        return (positions >= start[:, None]) & (positions < (start + length)[:, None])


class Pooling(nn.Module):
    """One pooling mode at one layer choice; no parameters, so save/load is its config."""

    def __init__(self, mode: PoolingMode = "mean", layer: int | str | LayerChoice = -1, attention_layer: int = -1):
        super().__init__()
        if mode not in POOLING_MODES:
            raise ConfigError(f"Unknown pooling {mode!r}; choose one of: {', '.join(POOLING_MODES)}.")
        self.mode = mode
        self.layer = LayerChoice.parse(layer)
        self.attention_layer = attention_layer

    def get_config_dict(self) -> dict[str, object]:
        return {"mode": self.mode, "layer": str(self.layer), "attention_layer": self.attention_layer}

    def forward(self, states: TokenStates) -> Float[Tensor, "batch hidden"]:
        indices = self.layer.indices(states.num_hidden_states)
        hidden = (
            states.hidden[indices[0]] if len(indices) == 1 else torch.stack([states.hidden[i] for i in indices]).mean(0)
        )
        return pool(hidden, states, self.mode, self.attention_layer)

    def extra_repr(self) -> str:
        return f"mode={self.mode}, layer={self.layer}"


def pool(
    hidden: Float[Tensor, "batch seq hidden"],
    states: TokenStates,
    mode: PoolingMode,
    attention_layer: int = -1,
) -> Float[Tensor, "batch hidden"]:
    """Pool ``hidden`` (already the chosen layer or layer mean) in ``mode``."""
    batch = torch.arange(hidden.shape[0], device=hidden.device)
    start, length = states.pooled_span()
    if mode == "last":
        return hidden[batch, start + length - 1]
    if mode == "eos":
        if bool((states.eos_index < 0).any()):
            raise ConfigError("EOS pooling needs an EOS token, and this tokenizer defines none.")
        return hidden[batch, states.eos_index]
    if mode == "mean":
        weights = states.sequence_mask().to(hidden.dtype)
    elif mode == "text_mean":
        weights = states.text_mask.to(hidden.dtype)
    elif mode == "weighted":
        # SGPT's position weights: the i-th token of the sequence (1-based) weighs i.
        positions = torch.arange(1, hidden.shape[1] + 1, device=hidden.device, dtype=hidden.dtype)
        weights = (positions[None, :] - start[:, None].to(hidden.dtype)) * states.sequence_mask()
    elif mode == "attention":
        layer = attention_layer % (states.num_hidden_states - 1)
        if layer not in states.attention_rows:
            raise ConfigError(f"Attention pooling needs the attention row of layer {attention_layer}; none captured.")
        weights = states.attention_rows[layer].to(hidden.dtype) * states.text_mask
    else:
        raise ConfigError(f"Unknown pooling {mode!r}; choose one of: {', '.join(POOLING_MODES)}.")
    weights = weights / weights.sum(dim=1, keepdim=True).clamp_min(torch.finfo(hidden.dtype).tiny)
    return torch.einsum("bs,bsh->bh", weights, hidden)
