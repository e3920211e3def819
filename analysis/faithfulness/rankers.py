"""The explanation methods under test: each a small class, keyed by name, that scores a text's tokens.

A ranker is registered with :func:`register`; :data:`RANKERS` maps each of :data:`~.config.METHODS` to one.
A ranker's :meth:`Ranker.scores` gives per-token scores for a batch of texts (its order is the content tokens by
``|score|``), or it brings its own orders (``random``). :func:`score_chunk` runs the chosen rankers and is the one
place their time is taken: rankers that share one computation (the attention methods share one capture) split its
time evenly.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from jaxtyping import Float

from analysis.attention import CapturedCorpus, capture_corpus, query_token_for
from analysis.attribution.integrated_gradients import Attributor, frozen
from analysis.categories import query_index
from analysis.faithfulness.config import FaithfulnessConfig
from analysis.faithfulness.perturbation import ContentText
from core.encoding.encoder import Encoder

__all__ = [
    "RANKERS",
    "Context",
    "Ranker",
    "Scored",
    "gradient_x_input_scores",
    "orders_for",
    "random_order",
    "ranked",
    "register",
    "rollout",
    "score_chunk",
]


@dataclass
class Context:
    """What rankers score with: the encoder, one setting (``use_adapter``), the run's config and peak layer.

    ``shared`` keeps a computation several rankers use (one attention capture) for the batch being scored.
    """

    encoder: Encoder
    use_adapter: bool
    config: FaithfulnessConfig
    peak: int
    shared: dict[str, Any] = field(default_factory=dict)


@dataclass
class Scored:
    """Per-token scores of a batch, one array per text, and per-text extras a ranker reports (by batch index)."""

    values: list[np.ndarray]
    extras: dict[int, dict[str, Any]] = field(default_factory=dict)


class Ranker:
    """An explanation method: ranks a text's content tokens by ``|score|``, largest first.

    Class attributes: ``name`` (the method's key), ``shares`` (the name of a computation it shares with other
    rankers, whose time they split), ``subset`` (scores only the texts the run picks for it: integrated gradients'
    ``ig_texts``), ``scored`` (False for a ranker that brings its own orders).
    """

    name: ClassVar[str]
    shares: ClassVar[str | None] = None
    subset: ClassVar[bool] = False
    scored: ClassVar[bool] = True

    def scores(self, context: Context, texts: Sequence[ContentText]) -> Scored:
        """Per-token scores of ``texts`` (indices as in ``item.input_ids``)."""
        raise NotImplementedError

    def orders(
        self, text: ContentText, key: str, scores: np.ndarray | None, config: FaithfulnessConfig
    ) -> list[list[int]]:
        """The order(s) of ``text``'s content tokens (indices into ``text.positions``); none without scores."""
        return [ranked(scores, text)] if scores is not None else []


RANKERS: dict[str, Ranker] = {}
R = TypeVar("R", bound=type[Ranker])


def register(cls: R) -> R:
    """Class decorator: one instance of ``cls`` in :data:`RANKERS` under ``cls.name`` (a name is registered once)."""
    if cls.name in RANKERS:
        raise ValueError(f"ranker {cls.name!r} is registered twice")
    RANKERS[cls.name] = cls()
    return cls


def ranked(scores: np.ndarray, text: ContentText) -> list[int]:
    """Content tokens (indices into ``text.positions``) by |score|, largest first; ties keep text order."""
    values = np.abs(np.asarray([scores[p] for p in text.positions]))
    return [int(i) for i in np.argsort(-values, kind="stable")]


def random_order(n: int, seed: int, key: str, draw: int) -> list[int]:
    """A seeded permutation of ``n`` content tokens, fixed by the run's seed, the text's key and the draw."""
    entropy = int.from_bytes(hashlib.sha256(f"{seed}:{key}:{draw}".encode()).digest()[:8], "little")
    return [int(i) for i in np.random.default_rng(entropy).permutation(n)]


def rollout(maps: Float[np.ndarray, "layers heads keys keys"], query: int) -> Float[np.ndarray, " keys"]:
    """Attention rollout (Abnar & Zuidema 2020) of the query row: heads averaged, residual as 0.5 identity."""
    row = np.zeros(maps.shape[-1])
    row[query] = 1.0
    identity = np.eye(maps.shape[-1])
    for layer in range(maps.shape[0] - 1, -1, -1):
        mixed = 0.5 * maps[layer].mean(0).astype(np.float64) + 0.5 * identity
        row = row @ (mixed / mixed.sum(-1, keepdims=True))
    return row


# ----- attention: three readings of one capture


class _Attention(Ranker):
    shares = "attention capture"

    def scores(self, context: Context, texts: Sequence[ContentText]) -> Scored:
        captured = self.capture(context, texts)
        return Scored([self.read(context, text, item) for text, item in zip(texts, captured.items, strict=True)])

    @staticmethod
    def capture(context: Context, texts: Sequence[ContentText]) -> CapturedCorpus:
        """One capture of the batch for every attention ranker; full maps only where rollout needs them."""
        if "capture" not in context.shared:
            full = "rollout" in context.config.methods
            context.shared["capture"] = capture_corpus(
                context.encoder,
                [t.text for t in texts],
                use_adapter=context.use_adapter,
                mode="full" if full else "rows",
                token=query_token_for(context.encoder.pooling),
                keep_maps=full,
            )
        return context.shared["capture"]

    def read(self, context: Context, text: ContentText, item: Any) -> np.ndarray:
        raise NotImplementedError


@register
class AttentionLast(_Attention):
    """The pooled token's attention in the last layer, heads averaged."""

    name = "attention_last"

    def read(self, context: Context, text: ContentText, item: Any) -> np.ndarray:
        return item.weights(-1)


@register
class AttentionPeak(_Attention):
    """The pooled token's attention in the run's peak layer (where the adapter shifts attention most)."""

    name = "attention_peak"

    def read(self, context: Context, text: ContentText, item: Any) -> np.ndarray:
        return item.weights(context.peak)


@register
class Rollout(_Attention):
    """Attention rollout of the pooled token's row through every layer."""

    name = "rollout"

    def read(self, context: Context, text: ContentText, item: Any) -> np.ndarray:
        return rollout(item.maps, query_index(text.item, query_token_for(context.encoder.pooling)))


# ----- gradients


@register
class IntegratedGradients(Ranker):
    """``Attributor.token_shares_many`` (pad baseline), on the texts the run picks (``ig_texts`` per task).

    Adaptive: ``ig_steps`` Gauss-Legendre steps over the whole path first; a segment whose completeness gap
    exceeds its share of ``ig_tolerance`` is halved (twice the steps there), up to ``ig_max_steps`` per text.
    Each text's extras: ``ig_relative_delta`` (completeness error relative to f(text) - f(baseline)), ``ig_steps``.
    """

    name = "integrated_gradients"
    subset = True

    def scores(self, context: Context, texts: Sequence[ContentText]) -> Scored:
        config = context.config
        attributor = Attributor(
            context.encoder,
            token=query_token_for(context.encoder.pooling),
            n_steps=config.ig_steps,
            max_steps=config.ig_max_steps,
            tolerance=config.ig_tolerance,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the deltas are reported (distribution, count above tolerance)
            attributions = attributor.token_shares_many([text.text for text in texts], context.use_adapter)
        return Scored(
            [np.asarray(a.scores, dtype=np.float64) for a in attributions],
            {i: {"ig_relative_delta": a.relative_delta, "ig_steps": a.steps} for i, a in enumerate(attributions)},
        )


@register
class GradientXInput(Ranker):
    """Gradient x input of the pooled vector's norm (its projection on its own direction), summed over hidden."""

    name = "gradient_x_input"

    def scores(self, context: Context, texts: Sequence[ContentText]) -> Scored:
        return Scored(gradient_x_input_scores(context.encoder, texts, context.use_adapter))


def gradient_x_input_scores(encoder: Encoder, texts: Sequence[ContentText], use_adapter: bool) -> list[np.ndarray]:
    """:class:`GradientXInput`'s scores: per text, one value per token of ``item.input_ids`` as the encoder runs them
    (an appended EOS the pooling does not read is left out: it changes no earlier state)."""
    plan = encoder.plan()
    items = encoder.runnable([t.item for t in texts], plan)
    table = encoder.loaded.backbone.get_input_embeddings()
    scores: list[np.ndarray | None] = [None] * len(items)
    with encoder.loaded.adapter_enabled(use_adapter), frozen(encoder.loaded.model), torch.enable_grad():
        for group in encoder.batches(items):
            batch = encoder.to_device(encoder.collate([items[i] for i in group]))
            embeds = table(batch["input_ids"]).detach().requires_grad_(True)
            pooled = plan.poolings[0](encoder.forward(batch, plan, inputs_embeds=embeds))
            direction = (pooled / pooled.norm(dim=-1, keepdim=True).clamp_min(1e-12)).detach()
            (pooled * direction).sum().backward()
            per_token = (embeds.grad * embeds).sum(-1).detach().double().cpu().numpy()
            for row, index in enumerate(group):
                start = int(batch["start"][row])
                scores[index] = per_token[row, start : start + len(items[index].input_ids)]
    return [s for s in scores if s is not None]


# ----- the floor


@register
class Random(Ranker):
    """Seeded random orders (``random_seeds`` draws per text): the floor every method should beat."""

    name = "random"
    scored = False

    def orders(
        self, text: ContentText, key: str, scores: np.ndarray | None, config: FaithfulnessConfig
    ) -> list[list[int]]:
        return [random_order(len(text.positions), config.seed, key, draw) for draw in range(config.random_seeds)]


# ----- running the chosen rankers


def score_chunk(
    context: Context, texts: Sequence[ContentText], with_subset: Sequence[bool], seconds: dict[str, float]
) -> tuple[list[dict[str, np.ndarray]], dict[int, dict[str, Any]]]:
    """Per text, each chosen ranker's token scores, and the extras rankers report, by text index.

    Rankers marked ``subset`` score only the texts ``with_subset`` marks. Each ranker's seconds are added to
    ``seconds``; rankers sharing a computation split their summed time evenly.
    """
    per_text: list[dict[str, np.ndarray]] = [{} for _ in texts]
    extras: dict[int, dict[str, Any]] = {}
    spent: dict[str, float] = {}
    chosen = [RANKERS[name] for name in context.config.methods if RANKERS[name].scored]
    for ranker in chosen:
        indices = [i for i, wanted in enumerate(with_subset) if wanted] if ranker.subset else list(range(len(texts)))
        if not indices:
            continue
        started = time.perf_counter()
        scored = ranker.scores(context, [texts[i] for i in indices])
        spent[ranker.name] = time.perf_counter() - started
        for index, value in zip(indices, scored.values, strict=True):
            per_text[index][ranker.name] = value
        for position, values in scored.extras.items():
            extras.setdefault(indices[position], {}).update(values)
    _split_shared(spent)
    for name, value in spent.items():
        seconds[name] = seconds.get(name, 0.0) + value
    return per_text, extras


def _split_shared(spent: dict[str, float]) -> None:
    """Rankers that share a computation: whichever ran it first paid for it, so each gets the group's mean."""
    groups: dict[str, list[str]] = {}
    for name in spent:
        if RANKERS[name].shares:
            groups.setdefault(RANKERS[name].shares, []).append(name)
    for names in groups.values():
        mean = sum(spent[name] for name in names) / len(names)
        for name in names:
            spent[name] = mean


def orders_for(
    text: ContentText, key: str, scores: dict[str, np.ndarray], config: FaithfulnessConfig
) -> dict[str, list[list[int]]]:
    """Each chosen method's order(s) of the content tokens, in the config's method order; a method without
    scores for this text (integrated gradients beyond ``ig_texts``) has none."""
    orders = {name: RANKERS[name].orders(text, key, scores.get(name), config) for name in config.methods}
    return {name: value for name, value in orders.items() if value}
