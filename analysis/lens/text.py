"""The lens of one text: its top tokens at every layer for base and adapter, and what the adapter changed.

Every layer's pooled vector comes from one shared forward (``Encoder.encode_grid`` over both variants); each goes
through the final norm (all but the last hidden state) and the LM head (:mod:`analysis.lens.vocabulary`). The
difference is per layer the tokens whose probability the adapter raised and lowered most.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from analysis.lens.vocabulary import content_token_ids, lens_head, project

__all__ = ["TextLens", "text_lens"]


@dataclass
class TextLens:
    """One text's lens. ``top[variant][layer]`` is a list of (token, probability); ``ranks[variant]`` is
    (hidden states, content tokens) 0-based ranks of the text's own content tokens; ``changes[layer]`` holds the
    ``rises`` and ``falls`` of probability from base to adapter (empty without an adapter)."""

    text: str
    layers: list[int]
    content_tokens: list[str]
    top: dict[str, list[list[tuple[str, float]]]]
    ranks: dict[str, np.ndarray]
    changes: list[dict[str, list[tuple[str, float]]]] = field(default_factory=list)
    pc_removed: bool = False

    def table(self, variant: str) -> list[dict[str, Any]]:
        """Rows (layer, rank, token, probability) for a download."""
        return [
            {"layer": layer, "rank": rank, "token": token, "probability": round(prob, 6)}
            for layer, tokens in zip(self.layers, self.top[variant], strict=True)
            for rank, (token, prob) in enumerate(tokens)
        ]


def text_lens(
    encoder,
    text: str,
    *,
    top_k: int = 10,
    pooling: str | None = None,
    use_adapter: bool | None = None,
    components: Mapping[str, Mapping[int, np.ndarray]] | None = None,
) -> TextLens:
    """The lens of ``text`` under ``encoder``'s setting (its pooling unless ``pooling``) at every hidden state.

    Args:
        encoder: a ``core.encoding.encoder.Encoder`` on a causal LM (an encoder model raises
            ``NoLanguageModelHeadError``).
        use_adapter: None = base and adapter where one is attached, else only the one asked for.
        components: per variant and hidden state, a corpus first principal component to project out
            (the lens report's ``arrays.npz``), or None for the raw lens.
    """
    loaded = encoder.loaded
    head = lens_head(loaded)
    variants = [False, True] if (use_adapter is None and loaded.has_adapter) else [bool(use_adapter)]
    names = {False: "base", True: "adapter"}
    final = loaded.num_layers
    mode = pooling or encoder.pooling
    combos = [(mode, index) for index in range(final + 1)]
    grids = {
        names[variant]: grid for variant, grid in encoder.encode_grid([text], combos, variants=tuple(variants)).items()
    }
    prepared = encoder.prepare([text])
    targets = content_token_ids(prepared)
    decode = encoder.tokenizer.decode
    layers = list(range(final + 1))
    top: dict[str, list[list[tuple[str, float]]]] = {}
    ranks: dict[str, np.ndarray] = {}
    full_probs: dict[str, list[torch.Tensor]] = {}
    for name, grid in grids.items():
        top[name], full_probs[name] = [], []
        ranks[name] = np.zeros((len(layers), len(targets[0])), dtype=np.int64)
        for index in layers:
            vector = torch.as_tensor(grid[(mode, str(index))])
            normed = head.normed(vector, already_normed=index == final)
            direction = components[name][index] if components is not None else None
            projection = project(head, normed, top_k=top_k, targets=targets, removals=(direction,))[0]
            top[name].append(
                [
                    (decode([int(t)]), float(p))
                    for t, p in zip(projection.top_ids[0], projection.top_probs[0], strict=True)
                ]
            )
            ranks[name][index] = projection.target_ranks[0, : len(targets[0])]
            if direction is not None:
                u = torch.as_tensor(direction, dtype=normed.dtype)
                normed = normed - (normed @ u)[:, None] * u[None, :]
            full_probs[name].append(torch.softmax(head.logits(normed)[0], dim=0))
    changes = []
    if len(grids) == 2:
        for index in layers:
            delta = full_probs["adapter"][index] - full_probs["base"][index]
            rise, fall = torch.topk(delta, top_k), torch.topk(-delta, top_k)
            changes.append(
                {
                    "rises": [(decode([int(t)]), float(v)) for v, t in zip(rise.values, rise.indices, strict=True)],
                    "falls": [(decode([int(t)]), -float(v)) for v, t in zip(fall.values, fall.indices, strict=True)],
                }
            )
    return TextLens(
        text=text,
        layers=layers,
        content_tokens=[decode([t]) for t in targets[0]],
        top=top,
        ranks=ranks,
        changes=changes,
        pc_removed=components is not None,
    )
