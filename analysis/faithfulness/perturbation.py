"""Removing a text's content tokens: the shortened texts of deletion and insertion, their vectors, the curves.

Each explanation method ranks a text's content tokens (``core.encoding.roles`` CONTENT: the text's non-stopword,
non-punctuation tokens; prompt, stopwords and punctuation are never ranked). Deletion removes them in that
order, k = 1..K; insertion starts from the text with every content token removed and puts them back in
order. After each step the pooled vector is compared with the original: ``1 - cosine``, and the change of
the text's cosine to a partner.

Removal, not masking: a token is removed by cutting its character span out of the text string, and the
shortened text is wrapped in the template again, so the prompt stays intact and the pooled (last) token
is still the template's last token. Masking (a pad or mask token in place) would feed the model an input
it never sees (SmolLM2 has no mask token, its pad is EOS), and attention-masking a position changes what
the pooled token can read without a text that produced it. The remaining text is tokenized afresh, so
neighbouring pieces may merge into different tokens; the curves measure what the model does with the
shortened text, which is what a user would feed it.

A shortened text equals its original up to the first removed token, and the other shortened texts of the same
original up to where their cuts differ: with the originals run once as references (``Encoder.references``), each
perturbed text runs only what no text before it has run (exact prefix reuse, :mod:`core.encoding.prefix`; the
encoder's ``prefix_reuse`` off runs every text whole).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float

from core.encoding.encoder import Encoder, PreparedText
from core.encoding.prefix import ReferenceStates
from core.encoding.roles import Role

__all__ = ["ContentText", "content_text", "curves_for", "pooled_vectors", "variants"]


@dataclass(frozen=True)
class ContentText:
    """A text (as the encoder keeps it, cut to max_length) with its content tokens' positions and spans."""

    text: str
    item: PreparedText
    positions: tuple[int, ...]  # token indices in ``item.input_ids``
    spans: tuple[tuple[int, int], ...]  # character spans in ``text``
    tokens: tuple[str, ...]

    def without(self, removed: Sequence[int]) -> str:
        """The text with the content tokens ``removed`` (indices into ``positions``) cut out."""
        cut = sorted((self.spans[i] for i in removed), reverse=True)
        text = self.text
        for start, end in cut:
            text = text[:start] + text[end:]
        return text


def content_text(encoder: Encoder, text: str) -> ContentText:
    """Locate the content tokens of ``text`` in the encoder's own tokenization of the wrapped text."""
    item = encoder.prepare([text])[0]
    prefix, suffix = encoder.prompt.prefix, encoder.prompt.suffix
    kept = item.wrapped[len(prefix) : len(item.wrapped) - len(suffix)]  # the text, cut where it was truncated
    offsets = encoder.tokenizer(item.wrapped, return_offsets_mapping=True, add_special_tokens=True)["offset_mapping"]
    positions, spans, tokens = [], [], []
    for position, role in enumerate(item.roles):
        if role != Role.CONTENT:
            continue
        start, end = offsets[position]
        # A token glued across the text's edge (a quote and the first word) keeps only its text part.
        span = (max(start - len(prefix), 0), min(end - len(prefix), len(kept)))
        positions.append(position)
        spans.append(span)
        tokens.append(kept[span[0] : span[1]])
    return ContentText(kept, item, tuple(positions), tuple(spans), tuple(tokens))


def pooled_vectors(
    encoder: Encoder,
    texts: Sequence[str],
    settings: Sequence[bool],
    references: tuple[ReferenceStates, Sequence[int]] | None = None,
) -> dict[bool, Float[np.ndarray, "texts hidden"]]:
    """Pooled vectors of (possibly empty) texts in the encoder's template, per setting (``use_adapter``).

    Base and adapter together run the layers below the adapter once (``Encoder.forward_variants``): a perturbed
    text is encoded once for both. Perturbed texts may lose every character: the template wrapped around
    nothing is a valid input (the prompt alone), so empty texts are allowed.

    ``references``: (``encoder.references(originals, encoder.plan(), settings)``, each text's original's index):
    each text runs only what neither its original nor another text of the same original has run (a deletion
    text after the previous step's cut, an insertion text after the first token it puts back); the vectors are
    the same (``Encoder.forward_shared``).
    """
    items = encoder.prepare(texts, allow_empty=True)
    plan = encoder.plan()
    out = {flag: np.zeros((len(items), encoder.dim), dtype=np.float64) for flag in dict.fromkeys(settings)}
    with torch.inference_mode():
        for group, states in encoder.forward_shared(items, plan, settings, references):
            for flag, flag_states in states.items():
                out[flag][group] = plan.poolings[0](flag_states).double().cpu().numpy()
    return out


def variants(text: ContentText, order: Sequence[int], k: int) -> tuple[list[str], list[str]]:
    """Deletion texts (top 1..k removed) and insertion texts (all removed, then top 0..k back)."""
    deletion = [text.without(order[:step]) for step in range(1, k + 1)]
    insertion = [text.without(order[step:]) for step in range(0, k + 1)]
    return deletion, insertion


def curves_for(
    order: Sequence[int],
    text: ContentText,
    k: int,
    vectors: dict[str, np.ndarray],
    original: np.ndarray,
    partner: np.ndarray,
) -> dict[str, list[float]]:
    """Distance and similarity-change curves of one order; ``vectors`` maps each variant text to its vector."""
    deletion, insertion = variants(text, order, k)

    def cosine(a: np.ndarray, b: np.ndarray) -> float:
        return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))

    base_sim = cosine(original, partner)

    def distance(v: np.ndarray) -> float:
        return 1.0 - cosine(v, original)

    def sim_change(v: np.ndarray) -> float:
        return abs(cosine(v, partner) - base_sim)

    return {
        "deletion": [0.0] + [distance(vectors[t]) for t in deletion],
        "insertion": [distance(vectors[t]) for t in insertion],
        "sim_deletion": [0.0] + [sim_change(vectors[t]) for t in deletion],
        "sim_insertion": [sim_change(vectors[t]) for t in insertion],
    }
