"""Texts to model inputs: wrap each text in its template, tokenize (cutting an over-long text before it is
wrapped, so the template's end survives), then group by length under a token budget and pad into a batch.

Pure functions of a tokenizer and a few numbers; the :class:`~core.encoding.encoder.Encoder` calls them with
its setting. A text's tokens do not depend on its batch-mates: position ids come from the attention mask and the
pooled positions are explicit, so padding side and batch composition do not change a vector.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from core.encoding.methods import Template, placeholder_index, pooled_span
from core.encoding.prompts import PLACEHOLDER
from core.encoding.roles import TEXT_ROLES, Role, token_roles
from core.runtime.errors import ConfigError

__all__ = [
    "CALL_TOKENS",
    "PaddingSide",
    "PreparedText",
    "batches",
    "collate",
    "least_padding_batches",
    "prepare_text",
    "validate_texts",
    "without_appended_eos",
]

PaddingSide = Literal["right", "left"]
# What one forward call costs beside its tokens, in tokens (on a CPU every call streams all weights from memory):
# batches of texts of many lengths (prefix-reusing waves, references) are cut where padding costs more than a call.
CALL_TOKENS = 64


@dataclass(frozen=True)
class PreparedText:
    """A text wrapped in its prompt and tokenized, with each token's role."""

    input_ids: tuple[int, ...]  # the tokenizer's encoding, plus an appended EOS where ``eos_index >= 0``
    roles: tuple[Role, ...]
    length: int  # tokens of the wrapped text, appended EOS excluded
    eos_index: int
    wrapped: str
    truncated: bool
    # Method hook points (core.encoding.methods): the pooled token range [start, end), the TP placeholder's position.
    pooled: tuple[int, int] | None = None  # None: the whole wrapped text
    placeholder_index: int = -1


def validate_texts(texts: Sequence[Any], *, allow_empty: bool = False) -> list[str]:
    """``texts`` as a list of strings; a single string, a non-string or (unless ``allow_empty``) an empty text is
    refused."""
    if isinstance(texts, str):
        raise TypeError("encode() takes a list of texts, not a single string: wrap it as [text].")
    texts = list(texts)
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"Text {index} is a {type(text).__name__}, not a string: {text!r:.80}")
        if not allow_empty and not text.strip():
            raise ConfigError(f"Text {index} is empty or whitespace only; remove it or give it content.")
    return texts


def prepare_text(tokenizer: Any, text: str, template: Template, max_length: int, *, causal: bool) -> PreparedText:
    """``text`` wrapped in ``template`` and tokenized within ``max_length`` tokens.

    Args:
        tokenizer: the model's tokenizer (offsets and special-token masks are read).
        causal: a decoder LM gets an EOS appended (``eos`` pooling reads it; causal attention keeps it from
            changing the states before it); a bidirectional encoder gets none.

    Returns:
        The prepared text; ``truncated`` says whether the text was cut (at a token boundary, before wrapping).
    """
    eos = tokenizer.eos_token_id if causal else None
    truncated = False
    keep: int | None = None
    while True:
        wrapped = template.wrap(text)
        encoding = tokenizer(
            wrapped.string, return_offsets_mapping=True, return_special_tokens_mask=True, add_special_tokens=True
        )
        ids = list(encoding["input_ids"])
        appended = eos is not None and (not ids or ids[-1] != eos)
        total = len(ids) + int(appended)
        if total <= max_length:
            break
        # Cut the text at a token boundary and retry; the loop ends since ``keep`` shrinks.
        text_offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        copies = template.template.count(PLACEHOLDER)  # echo gives the text twice: cut half as many tokens
        keep = len(text_offsets) - math.ceil((total - max_length) / copies) if keep is None else keep - 1
        if keep < 1:
            raise ConfigError(
                f"The prompt {template.template!r} leaves no room for text within max_length={max_length} "
                "tokens; raise max_length or shorten the template."
            )
        text = text[: text_offsets[keep - 1][1]]
        truncated = True
    roles = token_roles(
        wrapped.string,
        [tuple(span) for span in encoding["offset_mapping"]],
        [bool(flag) for flag in encoding["special_tokens_mask"]],
        wrapped.text_start,
        wrapped.text_end,
        first_copy=wrapped.first_copy,
        placeholder=wrapped.placeholder,
    )
    if appended:
        ids.append(eos)
        roles.append(Role.SPECIAL)
        eos_index = len(ids) - 1
        length = len(ids) - 1
    else:
        eos_index = len(ids) - 1 if eos is not None else -1
        length = len(ids)
    return PreparedText(
        tuple(ids),
        tuple(roles),
        length,
        eos_index,
        wrapped.string,
        truncated,
        pooled=pooled_span(roles, length),
        placeholder_index=placeholder_index(roles, template),
    )


def without_appended_eos(item: PreparedText) -> PreparedText:
    """``item`` without the EOS :func:`prepare_text` appended (the same item where none was appended).

    In a causal decoder the appended EOS changes no state before it, so a forward whose poolings do not read it
    (every pooling but ``eos``) gives the same vectors without running it.
    """
    if item.eos_index != item.length:  # no EOS, or the tokenizer's own (part of the wrapped text)
        return item
    return dataclasses.replace(
        item, input_ids=item.input_ids[: item.length], roles=item.roles[: item.length], eos_index=-1
    )


def batches(
    prepared: Sequence[PreparedText], batch_tokens: int, max_batch_size: int, runs: Sequence[int] | None = None
) -> list[list[int]]:
    """Indices grouped longest first, each batch's padded size (``width x rows``) within ``batch_tokens`` and at
    most ``max_batch_size`` rows; a text longer than the budget gets a batch of its own.

    ``runs``: the tokens each text runs through the decoder (fewer than its own where a prefix is reused), which
    then set the order and the widths; default: every token."""
    width_of = list(runs) if runs is not None else [len(item.input_ids) for item in prepared]
    order = sorted(range(len(prepared)), key=lambda i: -width_of[i])
    groups: list[list[int]] = []
    for index in order:
        group = groups[-1] if groups else None
        width = width_of[group[0]] if group else 0  # first is the longest
        if group and len(group) < max_batch_size and width * (len(group) + 1) <= batch_tokens:
            group.append(index)
        else:
            groups.append([index])
    return groups


def least_padding_batches(
    widths: Sequence[int], batch_tokens: int, max_batch_size: int, call_tokens: int
) -> list[list[int]]:
    """Indices grouped longest first, each batch within ``batch_tokens`` padded tokens and ``max_batch_size`` rows,
    cut where the padded tokens plus ``call_tokens`` per batch are fewest.

    For texts of many lengths (the suffixes of a prefix-reusing wave), where :func:`batches` fills each batch up
    and pads its short rows to its longest. ``call_tokens`` is a forward call's own cost in tokens (a CPU streams
    every weight once per call): 0 cuts at every change of width, a large value fills batches as ``batches`` does.

    Invariants: every index once; each batch's rows are consecutive in the longest-first order; the total of
    ``rows x width + call_tokens`` over the batches is the least among such groupings.
    """
    order = sorted(range(len(widths)), key=lambda i: -widths[i])
    sorted_widths = [widths[i] for i in order]
    n = len(order)
    starts = [p for p in range(n) if p == 0 or sorted_widths[p] != sorted_widths[p - 1]]
    # Runs of equal width: (first position, end, width, rows a batch of that width may hold).
    runs = [
        (start, end, sorted_widths[start], max(1, min(max_batch_size, batch_tokens // max(sorted_widths[start], 1))))
        for start, end in zip(starts, [*starts[1:], n], strict=True)
    ]
    # best[j]: least cost of the first j texts; cut[j]: where their last batch starts.
    best, cut = [0.0] + [math.inf] * n, [0] * (n + 1)
    for j in range(1, n + 1):
        for start, end, width, rows_cap in runs:
            if start >= j:
                break
            # Within a run of equal widths the earliest feasible start is best: each text costs at least its width.
            first = max(start, j - rows_cap)
            if first >= end:
                continue
            cost = best[first] + call_tokens + (j - first) * width
            if cost < best[j]:
                best[j], cut[j] = cost, first
    groups: list[list[int]] = []
    j = n
    while j > 0:
        groups.append(order[cut[j] : j])
        j = cut[j]
    return groups[::-1]


def collate(items: Sequence[PreparedText], pad_token_id: int | None, padding_side: PaddingSide) -> dict[str, Tensor]:
    """One padded batch: token ids, masks, positions, and the spans pooling reads (absolute positions)."""
    width = max(len(item.input_ids) for item in items)
    pad = pad_token_id if pad_token_id is not None else 0
    ids = torch.full((len(items), width), pad, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    text_mask = torch.zeros((len(items), width), dtype=torch.bool)
    start = torch.zeros(len(items), dtype=torch.long)
    for row, item in enumerate(items):
        offset = width - len(item.input_ids) if padding_side == "left" else 0
        ids[row, offset : offset + len(item.input_ids)] = torch.tensor(item.input_ids)
        mask[row, offset : offset + len(item.input_ids)] = 1
        text_mask[row, offset : offset + len(item.roles)] = torch.tensor([r in TEXT_ROLES for r in item.roles])
        start[row] = offset
    eos_index = torch.tensor([item.eos_index for item in items])
    pooled = torch.tensor([item.pooled or (0, item.length) for item in items])
    return {
        "input_ids": ids,
        "attention_mask": mask,
        # Positions from the mask, so a left-padded text sees the same positions as alone.
        "position_ids": (mask.cumsum(1) - 1).clamp_min(0),
        "start": start,
        "length": torch.tensor([item.length for item in items]),
        "eos_index": torch.where(eos_index >= 0, eos_index + start, eos_index),
        "text_mask": text_mask,
        # Method hook points (core.encoding.methods): the pooled span, absolute; the TP placeholder's position.
        "pooled_start": start + pooled[:, 0],
        "pooled_length": pooled[:, 1] - pooled[:, 0],
        "placeholder": start + torch.tensor([item.placeholder_index for item in items]),
    }
