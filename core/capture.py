"""Attention capture by forward hooks on the attention modules (eager attention).

Row mode keeps only the pooled token's attention row per layer, so L x L maps are never held for
all layers at once: each layer's full map exists only while its hook runs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn


def attention_modules(backbone: nn.Module) -> list[nn.Module]:
    """The self-attention module of each decoder layer, in layer order."""
    layers = getattr(backbone, "layers", None)
    if layers is None or not all(hasattr(layer, "self_attn") for layer in layers):
        raise ValueError(
            f"{type(backbone).__name__} has no decoder layers with a 'self_attn' module; attention capture "
            "supports Llama-style decoders (Llama, Qwen, Gemma, Mistral, SmolLM)."
        )
    return [layer.self_attn for layer in layers]


def _check_weights(weights: Tensor | None, layer: int) -> Tensor:
    if weights is None:
        raise RuntimeError(
            f"Layer {layer} returned no attention weights: the model must run with attn_implementation='eager'."
        )
    return weights


@contextmanager
def capture_attention_rows(
    backbone: nn.Module,
    layers: Sequence[int],
    query_positions: Int[Tensor, " batch"],
    mean_over_heads: bool = True,
) -> Iterator[dict[int, Float[Tensor, "batch seq"] | Float[Tensor, "batch heads seq"]]]:
    """Collect, for each layer in ``layers``, the attention row of the token at ``query_positions``.

    Rows are ``(batch, seq)`` (mean over heads) or ``(batch, heads, seq)``; filled during the forward.
    """
    modules = attention_modules(backbone)
    rows: dict[int, Tensor] = {}
    batch = torch.arange(query_positions.shape[0])
    handles = []
    for layer in layers:
        if not -len(modules) <= layer < len(modules):
            raise ValueError(f"Attention layer {layer} is out of range: use 0..{len(modules) - 1} or negative indices.")
        index = layer % len(modules)

        def hook(_module, _args, output, index=index):
            weights = _check_weights(output[1], index)  # (batch, heads, query, key)
            row = weights[batch, :, query_positions, :].float()
            rows[index] = row.mean(dim=1) if mean_over_heads else row

        handles.append(modules[index].register_forward_hook(hook))
    try:
        yield rows
    finally:
        for handle in handles:
            handle.remove()
