"""One forward of the backbone serves every pooling and layer; base or adapter is a switch on the same model.

:func:`plan_poolings` says what a forward must keep for a set of (pooling, layer) combinations;
:func:`forward_states` runs one forward with the adapter on or off and keeps that; :func:`forward_variants` gives
base and adapter states of one batch, running the decoder layers the adapter leaves untouched once.

With ``reuse=True`` a causal decoder runs a prefix every row of the batch shares (a template's prefix) once and
only the rows' suffixes after it, exactly (:mod:`core.encoding.prefix`, which names the cases that run full
forwards instead: attention capture, gradients, ``inputs_embeds``, sliding-window models; texts reusing other
texts' prefixes run through ``Encoder.forward_shared``).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

from jaxtyping import Float
from torch import Tensor

from core.encoding.capture import capture_attention_rows
from core.encoding.methods import Method, backbone_hooks
from core.encoding.pooling import ENCODER_POOLING_MODES, POOLING_MODES, LayerChoice, Pooling, PoolingMode, TokenStates
from core.encoding.prefix import (
    MIN_SHARED_PREFIX,
    batch_prefix,
    reference_states,
    reuse_blocker,
    row_tokens,
    suffix_states,
)
from core.encoding.trunk import recording_adapted_layer_calls, rerun_adapted_layers
from core.models.registry import LoadedModel
from core.runtime.device import ResolvedPrecision, autocast
from core.runtime.errors import ConfigError

__all__ = ["PoolingPlan", "check_pooling", "forward_states", "forward_variants", "plan_poolings", "to_device"]


@dataclass(frozen=True)
class PoolingPlan:
    """What one forward must keep so that each of ``poolings`` can read its states.

    ``hidden_indices`` are non-negative indices into the hidden states (0 = embeddings) and
    ``attention_layers`` the 0-based decoder layers whose last-token attention row is captured.
    """

    poolings: tuple[Pooling, ...]
    hidden_indices: tuple[int, ...]
    attention_layers: tuple[int, ...]

    @property
    def reads_appended_eos(self) -> bool:
        """Whether a pooling reads the EOS appended to a decoder's input (``eos``); the others end before it."""
        return any(pooling.mode == "eos" for pooling in self.poolings)


def check_pooling(pooling: str, is_causal: bool) -> PoolingMode:
    """``pooling`` if this kind of model supports it; a bidirectional encoder has no last token to read."""
    valid = POOLING_MODES if is_causal else ENCODER_POOLING_MODES
    if pooling not in valid:
        kind = "decoder" if is_causal else "bidirectional encoder"
        raise ConfigError(f"Unknown pooling {pooling!r} for a {kind}; choose one of: {', '.join(valid)}.")
    return pooling  # type: ignore[return-value]


def plan_poolings(
    loaded: LoadedModel, combos: Sequence[tuple[str, int | str | LayerChoice]], attention_layer: int
) -> PoolingPlan:
    """The poolings for ``combos`` of (mode, layer), validated for ``loaded``, and what one forward must keep."""
    poolings = tuple(Pooling(check_pooling(mode, loaded.is_causal), layer, attention_layer) for mode, layer in combos)
    hidden = sorted({i for p in poolings for i in p.layer.indices(loaded.num_layers + 1)})
    attention = sorted({p.attention_layer % loaded.num_layers for p in poolings if p.mode == "attention"})
    return PoolingPlan(poolings, tuple(hidden), tuple(attention))


def to_device(batch: dict[str, Tensor], loaded: LoadedModel) -> dict[str, Tensor]:
    """``batch``'s tensors on the model's device (a no-op where they already are)."""
    device = loaded.device
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


def forward_states(
    loaded: LoadedModel,
    method: Method,
    precision: ResolvedPrecision,
    batch: dict[str, Tensor],
    plan: PoolingPlan,
    inputs_embeds: Float[Tensor, "batch seq hidden"] | None = None,
    *,
    reuse: bool = False,
) -> TokenStates:
    """One forward of the backbone with the adapter as it is now; keeps what ``plan`` needs.

    ``inputs_embeds`` replaces the embedding lookup of ``batch["input_ids"]`` (integrated gradients differentiate
    with respect to them). Runs with whatever grad mode the caller set (training calls it with gradients on).
    ``reuse``: run the batch's shared token prefix once where that is exact (:mod:`core.encoding.prefix`);
    attention capture, gradients and ``inputs_embeds`` always run the full forward.
    """
    batch = to_device(batch, loaded)
    if reuse:
        reused = _shared_prefix_states(loaded, method, precision, batch, plan, (None,), inputs_embeds)
        if reused is not None:
            return reused[None]
    num_hidden_states = loaded.num_layers + 1
    wanted = list(plan.hidden_indices)
    only_last = wanted == [num_hidden_states - 1]
    query = batch["start"] + batch["length"] - 1
    capture = (
        capture_attention_rows(loaded.backbone, plan.attention_layers, query)
        if plan.attention_layers
        else nullcontext({})
    )
    model_inputs: dict[str, Any] = {key: batch[key] for key in ("attention_mask", "position_ids")}
    model_inputs["use_cache"] = False  # one forward, no generation: a key/value cache is only memory
    if inputs_embeds is None:
        model_inputs["input_ids"] = batch["input_ids"]
    elif tuple(inputs_embeds.shape[:2]) != tuple(batch["input_ids"].shape):
        raise ValueError(
            f"inputs_embeds of shape {tuple(inputs_embeds.shape)} do not match the batch's "
            f"{tuple(batch['input_ids'].shape)} token ids."
        )
    else:
        model_inputs["inputs_embeds"] = inputs_embeds
    with capture as rows, autocast(loaded.device, precision), backbone_hooks(method, loaded.backbone, batch):
        output = loaded.backbone(**model_inputs, output_hidden_states=not only_last)
    if only_last:
        hidden = {wanted[0]: output.last_hidden_state.float()}
    else:
        hidden = {i: output.hidden_states[i].float() for i in wanted}
    return TokenStates(
        num_hidden_states=num_hidden_states,
        hidden=hidden,
        start=batch["start"],
        length=batch["length"],
        eos_index=batch["eos_index"],
        text_mask=batch["text_mask"],
        attention_rows=dict(rows),
        pooled_start=batch.get("pooled_start"),
        pooled_length=batch.get("pooled_length"),
    )


def forward_variants(
    loaded: LoadedModel,
    method: Method,
    precision: ResolvedPrecision,
    batch: dict[str, Tensor],
    plan: PoolingPlan,
    variants: Sequence[bool],
    *,
    reuse: bool = False,
) -> dict[bool, TokenStates]:
    """Token states of ``batch`` per variant (base ``False``, adapter ``True``): one forward for one variant; for
    both, the layers below the adapter's lowest LoRA layer run once (:func:`_forward_pair`).

    ``reuse``: run the batch's shared token prefix once where exact.
    """
    variants = tuple(dict.fromkeys(variants))
    if reuse:
        reused = _shared_prefix_states(loaded, method, precision, to_device(batch, loaded), plan, variants, None)
        if reused is not None:
            return reused  # type: ignore[return-value]
    if len(variants) == 2:
        base, tuned = _forward_pair(loaded, method, precision, batch, plan)
        return {False: base, True: tuned}
    with loaded.adapter_enabled(variants[0]):
        return {variants[0]: forward_states(loaded, method, precision, batch, plan)}


def _shared_prefix_states(
    loaded: LoadedModel,
    method: Method,
    precision: ResolvedPrecision,
    batch: dict[str, Tensor],
    plan: PoolingPlan,
    variants: tuple[bool | None, ...],
    inputs_embeds: Tensor | None,
) -> dict[bool | None, TokenStates] | None:
    """States of ``batch`` with its shared prefix run once; ``None`` where reuse does not apply or pay."""
    if reuse_blocker(loaded, plan.attention_layers, inputs_embeds) is not None:
        return None
    shared = batch_prefix(method, batch)
    if shared < MIN_SHARED_PREFIX:
        return None
    prefix = row_tokens(batch, 0)[:shared]
    states = reference_states(loaded, precision, [prefix], plan.hidden_indices, variants)
    rows = batch["input_ids"].shape[0]
    return suffix_states(loaded, method, precision, batch, plan.hidden_indices, variants, states, [0] * rows,
                         [shared] * rows)[0]  # fmt: skip


def _forward_pair(
    loaded: LoadedModel, method: Method, precision: ResolvedPrecision, batch: dict[str, Tensor], plan: PoolingPlan
) -> tuple[TokenStates, TokenStates]:
    """(base, adapter) token states of ``batch``, running the layers the adapter leaves untouched once.

    The base forward runs whole, with pre-hooks recording what each upper decoder layer is called with
    (hidden states, mask, rotary embeddings, per-layer kwargs); the upper layers then run again from the
    same input with the adapter on, and the final norm. Equal to two separate forwards: the lower layers'
    weights and inputs are the same in both. Methods carry over: echo's pooled span is on the batch, and
    token prepending's pre-hooks wrap the upper rerun too (the recorded inputs precede its replacement).
    """
    shared = loaded.adapter_free_layers
    if shared == 0:  # the adapter touches the bottom layer or the embeddings: nothing to share
        with loaded.adapter_enabled(False):
            base = forward_states(loaded, method, precision, batch, plan)
        with loaded.adapter_enabled(True):
            return base, forward_states(loaded, method, precision, batch, plan)
    with recording_adapted_layer_calls(loaded) as calls, loaded.adapter_enabled(False):
        base = forward_states(loaded, method, precision, batch, plan)
    wanted = set(plan.hidden_indices)
    hidden_states = {i: base.hidden[i] for i in wanted if i <= shared}
    upper_attention = [layer for layer in plan.attention_layers if layer >= shared]
    capture = (
        capture_attention_rows(loaded.backbone, upper_attention, base.start + base.length - 1)
        if upper_attention
        else nullcontext({})
    )
    device_batch = to_device(batch, loaded)
    with (
        loaded.adapter_enabled(True),
        capture as rows,
        autocast(loaded.device, precision),
        backbone_hooks(method, loaded.backbone, device_batch),
    ):
        hidden_states.update(rerun_adapted_layers(loaded, calls, wanted))
    attention = {layer: row for layer, row in base.attention_rows.items() if layer < shared}
    tuned = TokenStates(
        num_hidden_states=base.num_hidden_states,
        hidden=hidden_states,
        start=base.start,
        length=base.length,
        eos_index=base.eos_index,
        text_mask=base.text_mask,
        attention_rows={**attention, **dict(rows)},
        pooled_start=base.pooled_start,
        pooled_length=base.pooled_length,
    )
    return base, tuned
