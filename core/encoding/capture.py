"""Attention capture by forward hooks on the attention modules (eager attention).

Two modes:

- ``rows``: only the attention rows of the query (pooled) token(s) per layer and head, so L x L
  maps are never held for all layers at once: each layer's full map exists only while its
  attention module runs, and the hook keeps one row of it.
- ``full``: the whole ``(heads, seq, seq)`` map of every requested layer.

Hooks only read the attention weights the module returns, so the forward (and every embedding
computed from it) is unchanged by capturing.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Literal, get_args

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from core.models import architecture
from core.runtime.errors import ConfigError, EagerAttentionError

CaptureMode = Literal["rows", "full"]
CAPTURE_MODES: tuple[str, ...] = get_args(CaptureMode)

# (batch, heads, seq) for one query per text, (batch, heads, queries, seq) for several, or a full map.
AttentionRows = Float[Tensor, "batch heads seq"] | Float[Tensor, "batch heads queries seq"]
AttentionMaps = Float[Tensor, "batch heads seq seq"]


def decoder_layers(backbone: nn.Module) -> nn.ModuleList:
    """The decoder layers, in order, found by ``core.models.architecture`` (Llama, Qwen, Gemma, Mistral, Phi-3,
    OLMo, GPT-2, GPT-NeoX, OPT, Falcon, mixture-of-experts models...)."""
    return architecture.decoder_layers(backbone)


def attention_modules(backbone: nn.Module) -> list[nn.Module]:
    """The self-attention module of each decoder layer, in layer order."""
    return architecture.attention_modules(backbone)


def num_heads(backbone: nn.Module) -> int:
    """Attention heads per layer (``num_attention_heads``, which GPT-2's ``n_head`` maps to)."""
    return int(backbone.config.num_attention_heads)


def _implementation(backbone: nn.Module) -> str | None:
    return getattr(getattr(backbone, "config", None), "_attn_implementation", None)


def check_eager(backbone: nn.Module) -> None:
    """Fail early, naming the fix, when attention weights will not be returned: the model neither runs eager
    attention nor can switch to it for a capture (``eager_attention``)."""
    implementation = _implementation(backbone)
    if implementation not in (None, "eager") and not hasattr(backbone, "set_attn_implementation"):
        raise EagerAttentionError(
            f"The model runs {implementation!r} attention, which returns no attention weights; load it with "
            "attn_implementation='eager' (core.models.registry.load_model does) to capture attention."
        )


@contextmanager
def eager_attention(backbone: nn.Module) -> Iterator[None]:
    """Run eager attention (which returns the weights) for the duration, then the model's own again.

    Models load with SDPA, faster where nothing is captured; both give the same states within float
    rounding (``tests/unit/encoding/test_capture.py`` checks 1e-5 on the tiny model).
    """
    check_eager(backbone)
    before = _implementation(backbone)
    if before in (None, "eager"):
        yield
        return
    backbone.set_attn_implementation("eager")
    if _implementation(backbone) != "eager":  # transformers only warns for a model that cannot switch
        raise EagerAttentionError(
            f"{type(backbone).__name__} cannot switch to eager attention at run time; load it with "
            "attn_implementation='eager' (core.models.registry.load_model does for such models) to capture attention."
        )
    try:
        yield
    finally:
        backbone.set_attn_implementation(before)


def resolve_layers(backbone: nn.Module, layers: Sequence[int] | None) -> list[int]:
    """0-based layer indices; ``None`` means every layer. Negative indices count from the end."""
    count = len(attention_modules(backbone))
    if layers is None:
        return list(range(count))
    resolved = []
    for layer in layers:
        if not -count <= layer < count:
            raise ConfigError(
                f"Attention layer {layer} is out of range: use 0..{count - 1} or -{count}..-1 "
                f"(this model has {count} layers)."
            )
        resolved.append(layer % count)
    return resolved


def _check_weights(weights: Tensor | None, layer: int) -> Tensor:
    if weights is None:
        raise EagerAttentionError(
            f"Layer {layer} returned no attention weights: the model must run with attn_implementation='eager'."
        )
    return weights


def _select_rows(weights: Tensor, query_positions: Tensor) -> Tensor:
    batch = torch.arange(weights.shape[0], device=weights.device)
    if query_positions.ndim == 1:
        return weights[batch, :, query_positions, :]  # (batch, heads, seq)
    # Several queries per text: (batch, queries, heads, seq) -> (batch, heads, queries, seq).
    return weights[batch[:, None], :, query_positions, :].transpose(1, 2)


@contextmanager
def capture_attention(
    backbone: nn.Module,
    layers: Sequence[int] | None = None,
    mode: CaptureMode = "rows",
    query_positions: Int[Tensor, " batch"] | Int[Tensor, "batch queries"] | None = None,
) -> Iterator[dict[int, AttentionRows | AttentionMaps]]:
    """Capture per-head attention, detached and float32, keyed by 0-based layer; filled during the forward.

    ``rows`` needs ``query_positions`` (one position per text, or several as ``(batch, queries)``).
    Run one forward per context: a second forward overwrites the first's entries.
    """
    if mode not in CAPTURE_MODES:
        raise ConfigError(f"Unknown capture mode {mode!r}; choose one of: {', '.join(CAPTURE_MODES)}.")
    if mode == "rows" and query_positions is None:
        raise ConfigError("Row capture needs query_positions (the pooled token of each text).")
    modules = attention_modules(backbone)
    check_eager(backbone)
    captured: dict[int, Tensor] = {}
    handles = []
    for index in resolve_layers(backbone, layers):

        def hook(_module, _args, output, index=index):
            weights = _check_weights(output[1], index).detach()  # (batch, heads, query, key)
            kept = weights if mode == "full" else _select_rows(weights, query_positions)
            captured[index] = kept.float().cpu()

        handles.append(modules[index].register_forward_hook(hook))
    try:
        with eager_attention(backbone):
            yield captured
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def capture_attention_rows(
    backbone: nn.Module,
    layers: Sequence[int],
    query_positions: Int[Tensor, " batch"],
    mean_over_heads: bool = True,
) -> Iterator[dict[int, Float[Tensor, "batch seq"] | Float[Tensor, "batch heads seq"]]]:
    """Collect, for each layer in ``layers``, the attention row of the token at ``query_positions``.

    Rows are ``(batch, seq)`` (mean over heads) or ``(batch, heads, seq)``; filled during the forward.
    Unlike ``capture_attention`` the rows stay in the autograd graph (attention pooling trains through them).
    """
    modules = attention_modules(backbone)
    rows: dict[int, Tensor] = {}
    handles = []
    for index in resolve_layers(backbone, layers):

        def hook(_module, _args, output, index=index):
            row = _select_rows(_check_weights(output[1], index), query_positions).float()
            rows[index] = row.mean(dim=1) if mean_over_heads else row

        handles.append(modules[index].register_forward_hook(hook))
    try:
        with eager_attention(backbone):
            yield rows
    finally:
        for handle in handles:
            handle.remove()
