"""Exact prefix reuse for causal decoders, and token-pass counting.

In a causal decoder a token's states depend only on the tokens up to it. Texts that share a token prefix with a
*reference* (a template's prefix shared by a whole batch; a perturbed text against its original) can take the
reference's key/value cache and hidden states for that prefix, and run only their suffixes through the decoder.
The vectors equal a full forward's up to fp32 rounding (the attention sums run over the same keys in another
order).

Two steps: :func:`reference_states` runs the references once (per variant, base and adapter sharing the layers
below the adapter) and keeps their key/value cache and the hidden states a plan reads; :func:`suffix_states` runs
each row's suffix against its reference's cache and returns :class:`~core.encoding.pooling.TokenStates` laid out
exactly as a full forward of the batch (same padding side, same positions), so every pooling reads them unchanged.

Where reuse is not exact or not supported it is not used (:func:`reuse_blocker` names the rule):

- a bidirectional encoder (every token sees the text's end);
- attention capture (``attention`` pooling, ``output_attentions`` paths) and any forward hook on the decoder
  layers or their parts (a capture or probe around an encode): they run full forwards, so the hooks see every token;
- ``inputs_embeds`` or gradients on (integrated gradients, training): full forwards;
- sliding-window attention (Gemma 3's local layers): the cache keeps a window, so it is left out;
- token prepending: the placeholder's state at layers ``start..exit-1`` is the *last* token's, so every token
  from the placeholder on depends on the text's end; reuse stops before the placeholder (:func:`reuse_limit`).

Texts that share prefixes with each other as well (a perturbed text's deletion and insertion curves: their texts
agree up to each cut): :func:`plan_reuse` gives each text a *parent* (its reference, or another text run in an
earlier wave) whose prefix it shares longest, so every token a family's texts have in common runs once (the
family's token trie); :func:`suffix_states` keeps the states of the rows later waves read (``keep``) and
:func:`select_references` gathers a wave's parents into one :class:`ReferenceStates`.

Echo needs no rule: its first copy is ordinary causal context and its pooled span is read from the assembled
states. Token-passes (:class:`TokenPasses`) count the tokens fed to the decoder stack (a forward pre-hook on the
backbone), so a base+adapter pair's shared trunk and a reused prefix count once.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from core.encoding.methods import Method, TokenPrepending, backbone_hooks
from core.encoding.pooling import TokenStates
from core.encoding.trunk import recording_adapted_layer_calls, rerun_adapted_layers
from core.models.architecture import decoder_layers
from core.models.registry import LoadedModel
from core.runtime.device import ResolvedPrecision, autocast

__all__ = [
    "MIN_SHARED_PREFIX",
    "ReferenceStates",
    "ReuseStep",
    "TokenPasses",
    "batch_prefix",
    "batch_reuse_limit",
    "common_prefix",
    "plan_reuse",
    "reference_states",
    "reuse_blocker",
    "reuse_limit",
    "row_tokens",
    "select_references",
    "suffix_states",
    "token_passes",
]

# A batch-wide prefix shorter than this is not worth the extra forward call.
MIN_SHARED_PREFIX = 2
Variant = bool | None  # base False, adapter True, None: the adapter as it is now
KeyValues = list[tuple[Tensor, Tensor]]  # per decoder layer: keys, values (batch, kv heads, seq, head dim)


@dataclass
class TokenPasses:
    """Tokens fed to a model's decoder stack (padding excluded) and the forwards that fed them.

    Counted by a forward pre-hook on the backbone (:func:`token_passes`): every forward counts, whoever runs it
    (encoding, attention capture, gradients). A base+adapter pair reruns only the upper layers without calling
    the backbone, so its shared trunk counts once; a reused prefix counts once, in its reference pass.
    """

    tokens: int = 0
    forwards: int = 0

    def snapshot(self) -> tuple[int, int]:
        return self.tokens, self.forwards

    def since(self, snapshot: tuple[int, int]) -> int:
        """Tokens counted since ``snapshot``."""
        return self.tokens - snapshot[0]


_COUNTERS: weakref.WeakKeyDictionary[torch.nn.Module, TokenPasses] = weakref.WeakKeyDictionary()


def token_passes(loaded: LoadedModel) -> TokenPasses:
    """The token-pass counter of ``loaded``'s backbone (registered on first use; one per backbone)."""
    backbone = loaded.backbone
    counter = _COUNTERS.get(backbone)
    if counter is None:
        counter = _COUNTERS[backbone] = TokenPasses()

        def count(_module, args: tuple, kwargs: dict) -> None:
            ids = kwargs.get("input_ids", args[0] if args else None)
            embeds = kwargs.get("inputs_embeds")
            source = ids if ids is not None else embeds
            if source is None:
                return
            new = source.shape[1]
            mask = kwargs.get("attention_mask")
            if isinstance(mask, Tensor) and mask.dim() == 2:
                counter.tokens += int(mask[:, -new:].sum())
            else:
                counter.tokens += int(source.shape[0] * new)
            counter.forwards += 1

        backbone.register_forward_pre_hook(count, with_kwargs=True)
    return counter


# ----- the rules


# Decoder families whose layer call carries the cache positionally (GPT-2, GPT-NeoX, Falcon).
POSITIONAL_CACHE_MODELS = frozenset({"gpt2", "gpt_neox", "falcon"})


def reuse_blocker(loaded: LoadedModel, attention_layers: Sequence[int], inputs_embeds: Tensor | None) -> str | None:
    """Why prefix reuse cannot serve this forward (``None``: it can); see the module docstring."""
    if not loaded.is_causal:
        return "a bidirectional encoder: every token sees the whole text"
    if attention_layers:
        return "attention rows are captured: full forwards"
    if inputs_embeds is not None or torch.is_grad_enabled():
        return "inputs_embeds or gradients: full forwards"
    if _watched(loaded.backbone):
        return "hooks watch the decoder layers (attention capture, probes): they must see every token run"
    config = loaded.backbone.config
    config = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    layer_types = getattr(config, "layer_types", None) or ()
    if any("sliding" in str(kind) for kind in layer_types) or getattr(config, "use_sliding_window", False):
        return "sliding-window attention layers: their cache keeps a window"
    if getattr(config, "model_type", None) in POSITIONAL_CACHE_MODELS:
        return "its decoder layers take the key/value cache positionally: the adapter rerun cannot pass one"
    return None


def reuse_limit(method: Method, placeholder_index: int) -> int | None:
    """Tokens of a text (from its start) that may come from a reference at most under ``method``: up to the
    token-prepending placeholder (``placeholder_index``, exclusive), else unlimited (``None``)."""
    if isinstance(method, TokenPrepending) and len(method.layers):
        return placeholder_index
    return None


def batch_reuse_limit(method: Method, batch: dict[str, Tensor], row: int) -> int | None:
    """:func:`reuse_limit` of ``batch``'s row ``row``."""
    return reuse_limit(method, int(batch["placeholder"][row] - batch["start"][row]))


# Hooks the libraries install themselves (transformers records hidden states through them): not a watcher.
_LIBRARY_HOOKS = ("transformers.", "peft.", "accelerate.")


def _watched(backbone: torch.nn.Module) -> bool:
    """Whether a forward hook from outside the model libraries sits on a decoder layer or one of its parts."""
    for module in decoder_layers(backbone).modules():
        for hook in (*module._forward_hooks.values(), *module._forward_pre_hooks.values()):
            if not str(getattr(hook, "__module__", "")).startswith(_LIBRARY_HOOKS):
                return True
    return False


# ----- token prefixes


def row_tokens(batch: dict[str, Tensor], row: int) -> tuple[int, ...]:
    """The token ids of ``row`` without its padding."""
    mask = batch["attention_mask"][row].bool()
    return tuple(batch["input_ids"][row][mask].tolist())


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common token prefix of ``a`` and ``b``."""
    count = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        count += 1
    return count


def batch_prefix(method: Method, batch: dict[str, Tensor]) -> int:
    """Tokens every row of ``batch`` shares from its start, each row keeping at least one token to run and
    within :func:`reuse_limit`; 0 for a single row."""
    rows = [row_tokens(batch, row) for row in range(batch["input_ids"].shape[0])]
    if len(rows) < 2:
        return 0
    shared = min(len(row) - 1 for row in rows)
    for row in rows[1:]:
        shared = min(shared, common_prefix(rows[0], row))
    limits = [batch_reuse_limit(method, batch, row) for row in range(len(rows))]
    return max(0, min([shared, *(limit for limit in limits if limit is not None)]))


@dataclass(frozen=True)
class ReuseStep:
    """Where one text of a family takes its prefix from.

    ``parent``: -1 the family's reference, else the index (in the family) of a text run in an earlier wave;
    ``reuse``: the tokens taken from it (0: the text runs whole); ``wave``: 1 + the parent's wave (the reference's
    is 0).
    """

    parent: int
    reuse: int
    wave: int


def plan_reuse(
    texts: Sequence[Sequence[int]], reference: Sequence[int], limits: Sequence[int | None] | None = None
) -> list[ReuseStep]:
    """Each text's :class:`ReuseStep` in a family: a reference (already run) and texts sharing prefixes with it and
    with each other.

    Every text takes the longest prefix any other text or the reference can give it, so the tokens the family
    runs are its token trie's nodes outside the reference (each shared prefix runs once). In sorted order a
    text's longest common prefix with any text before it is the one with its predecessor, so each text's parent
    comes from before it; among the parents giving the same prefix the one of the lowest wave is taken, which
    keeps the waves (and the sequential forwards) few.

    Args:
        texts: the family's token ids (a duplicate reuses all but its last token).
        reference: the reference's token ids.
        limits: per text, the tokens it may take from any parent at most (:func:`reuse_limit`); None: no limit.

    Returns:
        One step per text, in ``texts``' order. Invariants: ``reuse`` leaves at least one token to run and is the
        common prefix of the text and its parent within the limit; a parent's wave is below its children's.
    """
    order = sorted(range(len(texts)), key=lambda i: tuple(texts[i]))
    # adjacent[p]: common prefix of the texts at sorted positions p and p + 1.
    adjacent = [common_prefix(texts[a], texts[b]) for a, b in pairwise(order)]
    steps: list[ReuseStep | None] = [None] * len(texts)
    for position, index in enumerate(order):
        text = texts[index]
        cap = len(text) - 1
        limit = limits[index] if limits is not None else None
        if limit is not None:
            cap = min(cap, limit)
        best = (min(common_prefix(text, reference), cap), 0, -1)  # (reuse, -wave, parent): larger is better
        shared = cap
        for earlier in range(position - 1, -1, -1):
            shared = min(shared, adjacent[earlier])
            if shared < best[0] or shared == 0:
                break
            candidate = steps[order[earlier]]
            assert candidate is not None
            if (shared, -candidate.wave) > best[:2]:
                best = (shared, -candidate.wave, order[earlier])
        reuse, minus_wave, parent = best
        steps[index] = ReuseStep(parent, reuse, 1 - minus_wave) if reuse > 0 else ReuseStep(-1, 0, 1)
    return [step for step in steps if step is not None]


# ----- the two passes


@dataclass
class ReferenceStates:
    """Reference sequences run once: per variant, each decoder layer's keys and values and the hidden states at
    ``hidden_indices`` (right-padded, ``lengths`` tokens per reference)."""

    ids: tuple[tuple[int, ...], ...]
    lengths: Int[Tensor, " refs"]
    past: dict[Variant, KeyValues]
    hidden: dict[Variant, dict[int, Float[Tensor, "refs seq hidden"]]]

    def reuse(self, ids: Sequence[int], ref: int, limit: int | None = None) -> int:
        """Tokens of ``ids`` that reference ``ref`` gives exactly: their common prefix, leaving at least one token
        to run and at most ``limit``."""
        shared = min(common_prefix(ids, self.ids[ref]), len(ids) - 1)
        return max(0, shared if limit is None else min(shared, limit))


def select_references(sources: Sequence[tuple[ReferenceStates, int]]) -> ReferenceStates:
    """One :class:`ReferenceStates` of the given (states, reference index) pairs, in their order (right-padded to
    the longest); the sources must hold the same variants and hidden indices."""
    groups: dict[int, tuple[ReferenceStates, list[int]]] = {}
    for states, ref in sources:
        groups.setdefault(id(states), (states, []))[1].append(ref)
    # Row p of the result is row rank[p] of the groups' rows stacked in group order.
    stacked = [(states, ref) for states, refs in groups.values() for ref in refs]
    position = {(id(states), ref): row for row, (states, ref) in enumerate(stacked)}
    first = next(iter(groups.values()))[0]
    device = first.lengths.device
    rank = torch.tensor([position[(id(states), ref)] for states, ref in sources], dtype=torch.long, device=device)
    lengths = torch.cat([states.lengths[torch.tensor(refs, device=device)] for states, refs in groups.values()])
    width = int(lengths.max()) if len(lengths) else 0

    # Base and adapter hold the same tensors for the layers below the adapter: each is gathered once.
    done: dict[tuple[int, ...], Tensor] = {}

    def gathered(tensors: list[Tensor], dim: int) -> Tensor:
        key = tuple(id(tensor) for tensor in tensors)
        if key not in done:
            done[key] = _gathered(tensors, dim)
        return done[key]

    def _gathered(tensors: list[Tensor], dim: int) -> Tensor:
        parts = []
        for tensor, (_, refs) in zip(tensors, groups.values(), strict=True):
            part = tensor[torch.tensor(refs, device=tensor.device), ...].narrow(dim, 0, min(width, tensor.shape[dim]))
            if part.shape[dim] < width:
                pad = list(part.shape)
                pad[dim] = width - part.shape[dim]
                part = torch.cat([part, part.new_zeros(pad)], dim=dim)
            parts.append(part)
        return torch.cat(parts)[rank]

    past = {
        variant: [
            (
                gathered([states.past[variant][layer][0] for states, _ in groups.values()], 2),
                gathered([states.past[variant][layer][1] for states, _ in groups.values()], 2),
            )
            for layer in range(len(first.past[variant]))
        ]
        for variant in first.past
    }
    hidden = {
        variant: {i: gathered([states.hidden[variant][i] for states, _ in groups.values()], 1) for i in layers}
        for variant, layers in first.hidden.items()
    }
    return ReferenceStates(tuple(states.ids[ref] for states, ref in sources), lengths[rank], past, hidden)


def reference_states(
    loaded: LoadedModel,
    precision: ResolvedPrecision,
    references: Sequence[Sequence[int]],
    hidden_indices: Sequence[int],
    variants: Sequence[Variant],
) -> ReferenceStates:
    """Run ``references`` (token ids, right-padded in one batch) once per variant and keep their cache and states.

    No method hooks run: a reference is only read before any point a method changes (:func:`reuse_limit`).
    """
    ids = tuple(tuple(int(t) for t in ref) for ref in references)
    width = max(len(ref) for ref in ids)
    input_ids = torch.zeros((len(ids), width), dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, ref in enumerate(ids):
        input_ids[row, : len(ref)] = torch.tensor(ref, dtype=torch.long)
        mask[row, : len(ref)] = 1
    inputs = {
        "input_ids": input_ids.to(loaded.device),
        "attention_mask": mask.to(loaded.device),
        "position_ids": (mask.cumsum(1) - 1).clamp_min(0).to(loaded.device),
    }
    hidden, past = _cached_forward(loaded, None, precision, inputs, {}, set(hidden_indices), variants, None)
    return ReferenceStates(ids, mask.sum(1), past, hidden)


def suffix_states(
    loaded: LoadedModel,
    method: Method,
    precision: ResolvedPrecision,
    batch: dict[str, Tensor],
    hidden_indices: Sequence[int],
    variants: Sequence[Variant],
    references: ReferenceStates,
    ref_index: Sequence[int],
    reuse: Sequence[int],
    keep: Sequence[int] = (),
) -> tuple[dict[Variant, TokenStates], ReferenceStates | None]:
    """Token states of ``batch`` per variant, each row's first ``reuse[row]`` tokens taken from reference
    ``ref_index[row]`` and the rest run through the decoder against its cache; and, for the rows in ``keep``, their
    whole key/value cache and states as references of later texts (None when ``keep`` is empty).

    Invariants (checked by the callers' use of :meth:`ReferenceStates.reuse`): row ``r``'s first ``reuse[r]``
    tokens equal its reference's, ``reuse[r]`` is below the row's token count and within :func:`reuse_limit`.
    The states are laid out as ``batch`` (same width, padding side and positions); padding positions hold zeros.
    The kept references are in ``keep``'s order.
    """
    device = loaded.device
    batch = {key: value.to(device) for key, value in batch.items()}
    rows = batch["input_ids"].shape[0]
    counts = batch["attention_mask"].sum(1)
    index = torch.tensor(list(ref_index), dtype=torch.long, device=device)
    taken = torch.tensor(list(reuse), dtype=torch.long, device=device)
    past_width = int(taken.max()) if rows else 0
    run = counts - taken  # tokens each row runs
    width = int(run.max())
    # Suffix tokens, right-padded: row r's token t (t >= taken[r]) sits at column t - taken[r].
    columns = torch.arange(width, device=device)
    source = (batch["start"] + taken)[:, None] + columns[None, :]
    valid = columns[None, :] < run[:, None]
    input_ids = batch["input_ids"].gather(1, source.clamp_max(batch["input_ids"].shape[1] - 1)) * valid
    past_columns = torch.arange(past_width, device=device)
    mask = torch.cat([(past_columns[None, :] < taken[:, None]), valid], dim=1).long()
    inputs = {
        "input_ids": input_ids,
        "attention_mask": mask,
        "position_ids": taken[:, None] + columns[None, :],
    }
    taken_past: dict[int, Tensor] = {}  # base and adapter share the lower layers' tensors: each is taken once

    def prefix_of(tensor: Tensor) -> Tensor:
        if id(tensor) not in taken_past:
            taken_past[id(tensor)] = tensor[index, :, :past_width]
        return taken_past[id(tensor)]

    past = {variant: [(prefix_of(k), prefix_of(v)) for k, v in references.past[variant]] for variant in variants}
    # The method's hook points, in suffix coordinates (token prepending: placeholder and last token).
    hook_batch = {
        "start": torch.zeros_like(taken),
        "length": batch["length"] - taken,
        "placeholder": batch["placeholder"] - batch["start"] - taken,
    }
    wanted = set(hidden_indices)
    # No row reusing a token (a family's first wave): a fresh cache, as an empty one is not a valid cache.
    hidden, cache = _cached_forward(
        loaded, method, precision, inputs, hook_batch, wanted, variants, past if past_width else None
    )

    def columns_of(token: Tensor) -> Tensor:
        """Where token ``t`` of each row sits in the prefix columns followed by the suffix columns."""
        picked = torch.where(token < taken[:, None], token, past_width + token - taken[:, None])
        return picked.clamp(0, past_width + width - 1)

    # Back to the batch's layout: position c of row r is its token t = c - start[r].
    full = torch.arange(batch["input_ids"].shape[1], device=device)
    token = full[None, :] - batch["start"][:, None]
    inside = (token >= 0) & (token < counts[:, None])
    gather = columns_of(token)
    combined = {
        variant: {
            i: torch.cat([references.hidden[variant][i][index, :past_width].to(suffix.dtype), suffix], dim=1)
            for i, suffix in hidden[variant].items()
        }
        for variant in variants
    }
    out: dict[Variant, TokenStates] = {}
    for variant in variants:
        states = {}
        for i, both in combined[variant].items():
            picked = both.gather(1, gather[:, :, None].expand(-1, -1, both.shape[-1]))
            states[i] = picked * inside[:, :, None].to(picked.dtype)
        out[variant] = TokenStates(
            num_hidden_states=loaded.num_layers + 1,
            hidden=states,
            start=batch["start"],
            length=batch["length"],
            eos_index=batch["eos_index"],
            text_mask=batch["text_mask"],
            attention_rows={},
            pooled_start=batch.get("pooled_start"),
            pooled_length=batch.get("pooled_length"),
        )
    if not keep:
        return out, None
    # The kept rows in a reference's layout: token t at column t.
    kept = torch.tensor(list(keep), dtype=torch.long, device=device)
    kept_counts = counts[kept]
    spots = columns_of(torch.arange(int(kept_counts.max()), device=device).expand(rows, -1))[kept]

    laid: dict[int, Tensor] = {}  # base and adapter share the lower layers' tensors: each is laid out once

    def laid_out(tensor: Tensor, dim: int) -> Tensor:
        """Rows ``keep`` of ``tensor`` (keys/values: dim 2, hidden states: dim 1) in the reference's layout."""
        if id(tensor) not in laid:
            laid[id(tensor)] = _laid_out(tensor, dim)
        return laid[id(tensor)]

    def _laid_out(tensor: Tensor, dim: int) -> Tensor:
        index = spots[:, None, :, None] if dim == 2 else spots[:, :, None]
        shape = list(tensor.shape)
        shape[0], shape[dim] = len(keep), spots.shape[1]
        return tensor[kept].gather(dim, index.expand(shape))

    return out, ReferenceStates(
        tuple(row_tokens(batch, row) for row in keep),
        kept_counts,
        {variant: [(laid_out(k, 2), laid_out(v, 2)) for k, v in cache[variant]] for variant in variants},
        {variant: {i: laid_out(both, 1) for i, both in combined[variant].items()} for variant in variants},
    )


def _cached_forward(
    loaded: LoadedModel,
    method: Method | None,
    precision: ResolvedPrecision,
    inputs: dict[str, Tensor],
    hook_batch: dict[str, Tensor],
    wanted: set[int],
    variants: Sequence[Variant],
    past: dict[Variant, KeyValues] | None,
) -> tuple[dict[Variant, dict[int, Tensor]], dict[Variant, KeyValues]]:
    """One forward with a key/value cache (``past``, or empty) per variant: the hidden states at ``wanted`` and the
    cache after the forward. Base and adapter together run the layers below the adapter once, as
    :func:`core.encoding.forward.forward_variants` does."""
    from transformers import DynamicCache  # the cache class; imported here to keep module import light

    config = loaded.backbone.config
    variants = tuple(dict.fromkeys(variants))
    hooks = (lambda: backbone_hooks(method, loaded.backbone, hook_batch)) if method is not None else None

    def cache(variant: Variant):
        data = past[variant] if past is not None else None
        return DynamicCache(ddp_cache_data=data, config=config) if data is not None else DynamicCache(config=config)

    def run(variant: Variant):
        kv = cache(variant)
        switch = loaded.adapter_enabled(variant) if variant is not None else _Nothing()
        with switch, autocast(loaded.device, precision), hooks() if hooks else _Nothing():
            output = loaded.backbone(**inputs, past_key_values=kv, use_cache=True, output_hidden_states=True)
        hidden = {i: output.hidden_states[i].float() for i in wanted}
        return hidden, [(layer.keys, layer.values) for layer in kv.layers]

    shared = loaded.adapter_free_layers
    if len(variants) < 2 or shared == 0:
        results = {variant: run(variant) for variant in variants}
        return {v: r[0] for v, r in results.items()}, {v: r[1] for v, r in results.items()}
    base, tuned = variants if variants[0] is False else variants[::-1]
    with recording_adapted_layer_calls(loaded) as calls:
        base_hidden, base_kv = run(base)
    tuned_cache = cache(tuned)
    hidden_states = {i: base_hidden[i] for i in wanted if i <= shared}
    with loaded.adapter_enabled(True), autocast(loaded.device, precision), hooks() if hooks else _Nothing():
        hidden_states.update(rerun_adapted_layers(loaded, calls, wanted, past_key_values=tuned_cache))
    tuned_kv = [
        (layer.keys, layer.values) if index >= shared else base_kv[index]
        for index, layer in enumerate(tuned_cache.layers)
    ]
    return {base: base_hidden, tuned: hidden_states}, {base: base_kv, tuned: tuned_kv}


class _Nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None
