"""Families of texts that share token prefixes with a reference and with each other, run each shared prefix once.

A family is a reference text already run (:func:`~core.encoding.prefix.reference_states`) and the texts pointing to
it (a faithfulness chunk's perturbed texts and their original). :func:`family_states` plans every family
(:func:`~core.encoding.prefix.plan_reuse`) and runs its texts in waves: each wave reads its parents' key/value
cache, kept from the reference or an earlier wave, and is batched by the tokens each text runs. Used by
:meth:`core.encoding.encoder.Encoder.forward_shared`; the states equal full forwards'.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence

from torch import Tensor

from core.encoding.batching import CALL_TOKENS, PreparedText, least_padding_batches
from core.encoding.forward import PoolingPlan, to_device
from core.encoding.methods import Method
from core.encoding.pooling import TokenStates
from core.encoding.prefix import (
    MIN_SHARED_PREFIX,
    ReferenceStates,
    ReuseStep,
    common_prefix,
    plan_reuse,
    reference_states,
    reuse_blocker,
    reuse_limit,
    select_references,
    suffix_states,
)
from core.models.registry import LoadedModel
from core.runtime.device import ResolvedPrecision

__all__ = ["family_references", "family_states"]


def family_states(
    loaded: LoadedModel,
    method: Method,
    precision: ResolvedPrecision,
    items: Sequence[PreparedText],
    plan: PoolingPlan,
    variants: tuple[bool, ...],
    references: tuple[ReferenceStates, Sequence[int]],
    collate: Callable[[Sequence[PreparedText]], dict[str, Tensor]],
    batch_tokens: int,
    max_batch_size: int,
) -> Iterator[tuple[list[int], dict[bool, TokenStates]]]:
    """Token states of ``items`` per variant, batch by batch: (the batch's indices into ``items``, its states).

    Args:
        items: the texts as they run (an unread appended EOS already left out).
        references: (states of the reference texts, each item's reference index).
        collate: pads prepared texts into a batch (the encoder's padding side and pad token).
        batch_tokens, max_batch_size: the batch budget, on the tokens each text runs; within it a wave's texts are
            grouped by :func:`~core.encoding.batching.least_padding_batches` (they run many different lengths).

    Invariants: each item runs only the tokens neither its reference nor an item of an earlier wave has run; a
    parent's kept states are dropped after the last wave that reads them.
    """
    states, of = references
    steps: list[ReuseStep] = [ReuseStep(-1, 0, 1)] * len(items)  # parents as indices into ``items``
    families: dict[int, list[int]] = {}
    for index, ref in enumerate(of):
        families.setdefault(ref, []).append(index)
    for ref, members in families.items():
        limits = [reuse_limit(method, items[i].placeholder_index) for i in members]
        planned = plan_reuse([items[i].input_ids for i in members], states.ids[ref], limits)
        for member, step in zip(members, planned, strict=True):
            steps[member] = dataclasses.replace(step, parent=members[step.parent] if step.parent >= 0 else -1)
    last_read: dict[int, int] = {}  # parent -> the last wave that reads it
    for step in steps:
        if step.parent >= 0:
            last_read[step.parent] = max(last_read.get(step.parent, 0), step.wave)
    kept: dict[int, tuple[ReferenceStates, int]] = {}

    def source_of(index: int) -> tuple[int, int]:
        """(parent item, -1), or (-1, reference) for an item whose parent is its reference."""
        parent = steps[index].parent
        return (parent, -1) if parent >= 0 else (-1, of[index])

    for wave in sorted({step.wave for step in steps}):
        rows = [index for index, step in enumerate(steps) if step.wave == wave]
        sources: dict[tuple[int, int], int] = {}  # -> row of the wave's pool
        for index in rows:
            sources.setdefault(source_of(index), len(sources))
        pool = select_references([kept[p] if p >= 0 else (states, ref) for p, ref in sources])
        runs = [len(items[i].input_ids) - steps[i].reuse for i in rows]
        for group in least_padding_batches(runs, batch_tokens, max_batch_size, CALL_TOKENS):
            members = [rows[i] for i in group]
            keep = [row for row, index in enumerate(members) if index in last_read]
            batch = to_device(collate([items[i] for i in members]), loaded)
            with loaded.lock:
                out, states_kept = suffix_states(
                    loaded, method, precision, batch, plan.hidden_indices, variants, pool,
                    [sources[source_of(i)] for i in members], [steps[i].reuse for i in members], keep,
                )  # fmt: skip
            for position, row in enumerate(keep):
                kept[members[row]] = (states_kept, position)
            yield members, out
        for parent in [p for p, last in last_read.items() if last == wave]:
            kept.pop(parent, None)


def family_references(
    loaded: LoadedModel,
    method: Method,
    precision: ResolvedPrecision,
    items: Sequence[PreparedText],
    plan: PoolingPlan,
    variants: Sequence[bool | None],
    collate: Callable[[Sequence[PreparedText]], dict[str, Tensor]],
    batch_tokens: int,
    max_batch_size: int,
    *,
    reuse: bool = True,
) -> ReferenceStates:
    """``items`` run once per variant, their key/value cache and the states ``plan`` reads kept: the references of
    :func:`family_states` (a faithfulness chunk's originals).

    With ``reuse``, the token prefix every item shares (a template's) runs once and each item only its rest, in
    batches cut by the tokens each runs (:func:`~core.encoding.batching.least_padding_batches`). Without it, where
    reuse is not exact (:func:`~core.encoding.prefix.reuse_blocker`) or where the items share fewer than
    :data:`~core.encoding.prefix.MIN_SHARED_PREFIX` tokens: one padded batch of whole items. Either way the states
    equal full forwards' up to fp32 rounding, and the references are in ``items``' order.
    """
    ids = [item.input_ids for item in items]
    shared = min(len(tokens) for tokens in ids) - 1
    for item in items:
        shared = min(shared, common_prefix(ids[0], item.input_ids))
        limit = reuse_limit(method, item.placeholder_index)
        shared = shared if limit is None else min(shared, limit)
    if not reuse or reuse_blocker(loaded, plan.attention_layers, None) is not None or shared < MIN_SHARED_PREFIX:
        return reference_states(loaded, precision, ids, plan.hidden_indices, variants)
    prefix = reference_states(loaded, precision, [ids[0][:shared]], plan.hidden_indices, variants)
    sources: list[tuple[ReferenceStates, int]] = [(prefix, 0)] * len(items)
    runs = [len(tokens) - shared for tokens in ids]
    for group in least_padding_batches(runs, batch_tokens, max_batch_size, CALL_TOKENS):
        batch = to_device(collate([items[i] for i in group]), loaded)
        _, kept = suffix_states(
            loaded, method, precision, batch, plan.hidden_indices, variants, prefix, [0] * len(group),
            [shared] * len(group), keep=range(len(group)),
        )  # fmt: skip
        assert kept is not None
        for position, index in enumerate(group):
            sources[index] = (kept, position)
    return select_references(sources)
