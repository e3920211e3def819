"""The pooled token's attention over a corpus, captured in one encoder pass per text batch."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from jaxtyping import Float

from analysis.categories import QueryToken, TextAttention, query_index, token_categories
from core.encoding.capture import CAPTURE_MODES, CaptureMode, capture_attention, check_eager, resolve_layers
from core.encoding.encoder import Encoder
from core.runtime.errors import ConfigError

__all__ = ["CapturedCorpus", "capture_corpus", "token_strings"]


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
                    tokens=token_strings(encoder, prepared[index].input_ids[: q + 1]),
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


def token_strings(encoder: Encoder, ids: Sequence[int]) -> list[str]:
    return [encoder.tokenizer.decode([i]) for i in ids]
