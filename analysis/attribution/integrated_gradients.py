"""Integrated-gradients attribution of pooled embeddings to input tokens (captum), base or adapter.

Two quantities, both attributed on the input embeddings (IG on ``inputs_embeds``):

- ``token_shares``: each token's share of the pooled vector, as the attribution of the vector's
  projection on its own (fixed) direction, i.e. its norm. Baseline ``pad``: every input embedding
  but the sink's (position 0) replaced by the pad token's, so prompt tokens get a share too
  (comparable with attention over all tokens); the sink's attribution is 0 by construction, and it
  is reported apart, as in the attention shares. A ``zero`` baseline converges slowly: RMSNorm is
  scale-invariant away from zero and steep near it, so the path's change crowds into its first steps.
- ``similarity``: which tokens make text A similar to text B. One-sided, in both directions: the
  cosine of A's pooled vector to B's fixed vector is attributed to A's tokens, and vice versa. A
  joint attribution would start from two identical all-zero inputs (cosine 1) and so explain
  dissimilarity. Baseline ``text``: only the text's tokens are replaced by the pad token's
  embedding, the prompt is kept, so the attribution says what the text contributes.

Completeness: the attributions sum to f(x) - f(baseline) up to the convergence delta, which must
stay under ``tolerance`` (5%) of that difference. The path is integrated adaptively: captum's IG
with ``n_steps`` per segment, halving the segments that miss their share of the error budget, up to
``max_steps`` gradient evaluations per text. ``token_shares_many`` does this for many texts at once: each
round's pending segments of all texts go through the model in the same batched passes (captum's IG takes
one row per segment, its text's row index as an extra forward argument). The public plumbing
(``collate``, ``pooled_at``, ``baseline_embeds``, ``frozen``) is what ``analysis.attribution.token_pairs`` and
``analysis.faithfulness`` build on.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import torch
from captum.attr import IntegratedGradients
from jaxtyping import Float
from scipy.stats import spearmanr
from torch import Tensor

from analysis.categories import (
    CATEGORIES,
    RENORMALISED,
    QueryToken,
    TextAttention,
    query_index,
    sides,
    token_categories,
)
from core.encoding.encoder import Encoder
from core.runtime.errors import ConfigError

Baseline = Literal["pad", "text", "zero"]
BASELINES: tuple[str, ...] = get_args(Baseline)


@dataclass
class Attribution:
    """Per-token attributions of one scalar ``f`` of one text; ``scores`` sum to ``target - reference``."""

    text: str
    tokens: list[str]
    categories: list[str]
    scores: Float[np.ndarray, " tokens"]
    target: float  # f(x)
    reference: float  # f(baseline)
    delta: float  # convergence delta: (f(x) - f(baseline)) - sum(scores)
    steps: int
    quantity: str
    baseline: Baseline

    @property
    def relative_delta(self) -> float:
        return abs(self.delta) / max(abs(self.target - self.reference), 1e-12)

    @property
    def shares(self) -> Float[np.ndarray, " tokens"]:
        """|attribution| normalised to sum to 1."""
        magnitude = np.abs(self.scores)
        return magnitude / max(float(magnitude.sum()), 1e-12)

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "tokens": self.tokens,
            "categories": self.categories,
            "scores": np.round(self.scores, 6).tolist(),
            "shares": np.round(self.shares, 6).tolist(),
            "target": round(self.target, 6),
            "reference": round(self.reference, 6),
            "delta": round(self.delta, 6),
            "relative_delta": round(self.relative_delta, 6),
            "steps": self.steps,
            "quantity": self.quantity,
            "baseline": self.baseline,
        }


@dataclass
class SimilarityAttribution:
    """Cosine of A to B attributed to A's tokens (B fixed) and to B's tokens (A fixed)."""

    cosine: float
    a: Attribution
    b: Attribution

    def to_dict(self) -> dict[str, Any]:
        return {"cosine": round(self.cosine, 6), "a": self.a.to_dict(), "b": self.b.to_dict()}


@dataclass(frozen=True)
class AttributionBatch:
    """Texts collated for attribution: one padded row per text, its input embeddings and token labels."""

    batch: dict[str, Tensor]
    embeds: Float[Tensor, "texts seq hidden"]
    tokens: list[list[str]]  # each text's own tokens (no padding)
    categories: list[list[str]]

    def unpadded(self, row: int, values: Tensor) -> Float[np.ndarray, " tokens"]:
        """Row ``row`` of a per-position (texts, seq) tensor, cut to that text's own tokens."""
        start = int(self.batch["start"][row])
        return values[row, start : start + len(self.tokens[row])].detach().double().cpu().numpy()


# A scalar of the pooled vectors: (pooled (m, hidden), text row of each (m,)) -> (m,).
Scalar = Callable[[Tensor, Tensor], Tensor]


class Attributor:
    """IG on the input embeddings of ``encoder``'s model, pooled as the encoder pools.

    Many texts are attributed together (``token_shares_many``): every pending path segment of every text
    goes through the model in the same batched forward and backward, within ``token_budget`` tokens.
    """

    def __init__(
        self,
        encoder: Encoder,
        *,
        token: QueryToken = "last",
        n_steps: int = 16,
        max_steps: int = 256,
        tolerance: float = 0.05,
        token_budget: int = 2048,
        on_steps: Callable[[int], None] | None = None,
    ):
        """``on_steps(steps)`` is called after each integrated path segment with the steps the current attribution
        has taken so far (a progress report; an exception it raises ends the attribution between segments)."""
        if n_steps < 2 or max_steps < n_steps:
            raise ConfigError(f"Need 2 <= n_steps <= max_steps, got n_steps={n_steps}, max_steps={max_steps}.")
        self.encoder = encoder
        self.token = token
        self.n_steps = n_steps
        self.max_steps = max_steps
        self.tolerance = tolerance
        self.token_budget = token_budget
        self.on_steps = on_steps
        self.plan = encoder.plan()

    # ----- model plumbing
    def collate(self, texts: Sequence[str]) -> AttributionBatch:
        """Prepare, pad and embed ``texts`` (one row each) as the encoder would feed them."""
        items = self.encoder.prepare(list(texts))
        batch = self.encoder.collate(items)
        batch["query"] = batch["start"] + torch.tensor([query_index(item, self.token) for item in items])
        batch = self.encoder.to_device(batch)
        tokens = [[self.encoder.tokenizer.decode([i]) for i in item.input_ids] for item in items]
        categories = [[CATEGORIES[c] for c in token_categories(item, len(item.input_ids) - 1)] for item in items]
        embeds = self.encoder.loaded.backbone.get_input_embeddings()(batch["input_ids"]).detach()
        return AttributionBatch(batch, embeds, tokens, categories)

    def pooled_at(
        self, embeds: Float[Tensor, "m seq hidden"], batch: dict[str, Tensor], rows: Tensor | None = None
    ) -> Float[Tensor, "m hidden"]:
        """The encoder's pooled vectors at input-embedding points; point i belongs to ``batch`` row ``rows[i]``
        (default: point i is row i)."""
        if rows is None:
            rows = torch.arange(embeds.shape[0], device=embeds.device)
        selected = {key: value[rows] for key, value in batch.items()}
        states = self.encoder.forward(selected, self.plan, inputs_embeds=embeds)
        return self.plan.poolings[0](states)

    def pooled(self, text: str, use_adapter: bool) -> Float[Tensor, " hidden"]:
        """The pooled vector of ``text`` through the embedding path IG differentiates."""
        prepared = self.collate([text])
        with torch.no_grad(), self.encoder.loaded.adapter_enabled(use_adapter):
            return self.pooled_at(prepared.embeds, prepared.batch)[0]

    def _reference_embedding(self) -> Float[Tensor, " hidden"]:
        """The pad token's embedding, or EOS's where the pad row is zero (Llama initialises it so)."""
        table = self.encoder.loaded.backbone.get_input_embeddings().weight.detach()
        tokenizer = self.encoder.tokenizer
        for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
            if token_id is not None and float(table[token_id].norm()) > 0:
                return table[token_id]
        return torch.zeros_like(table[0])

    def baseline_embeds(self, prepared: AttributionBatch, baseline: Baseline) -> Float[Tensor, "texts seq hidden"]:
        """The path's start for each row: ``pad`` (all but the sink), ``text`` (the text's tokens) or ``zero``."""
        embeds, batch = prepared.embeds, prepared.batch
        if baseline == "zero":
            return torch.zeros_like(embeds)
        if baseline not in ("pad", "text"):
            raise ConfigError(f"Unknown baseline {baseline!r}; choose one of: {', '.join(BASELINES)}.")
        replace = torch.ones_like(batch["text_mask"]) if baseline == "pad" else batch["text_mask"].clone()
        # The sink (position 0) keeps its own embedding: moving it moves the sink itself, and the path
        # then turns chaotic where attention leaves the old sink for a new one (measured on SmolLM2:
        # the pooled value jumps between -9 and +7 within 10% of the path, and IG does not converge).
        replace[torch.arange(replace.shape[0], device=replace.device), batch["start"]] = 0
        replace = replace[..., None].to(embeds.dtype)
        return embeds * (1 - replace) + self._reference_embedding() * replace

    def _chunks(self, n: int, width: int) -> list[slice]:
        size = max(1, self.token_budget // width)
        return [slice(i, i + size) for i in range(0, n, size)]

    # ----- integrated gradients
    def _attribute_many(
        self,
        prepared: AttributionBatch,
        texts: Sequence[str],
        scalar: Scalar,
        use_adapter: bool,
        baseline: Baseline,
        quantity: str,
    ) -> list[Attribution]:
        """Adaptive IG of ``scalar`` for every row of ``prepared``, all rows' segments batched together."""
        batch, embeds = prepared.batch, prepared.embeds
        reference_embeds = self.baseline_embeds(prepared, baseline)
        n, width = embeds.shape[:2]
        all_rows = torch.arange(n, device=embeds.device)

        def forward(inputs: Tensor, rows: Tensor) -> Tensor:
            return scalar(self.pooled_at(inputs, batch, rows), rows)

        with self.encoder.loaded.adapter_enabled(use_adapter), frozen(self.encoder.loaded.model):
            with torch.no_grad():
                both = torch.cat([embeds, reference_embeds])
                both_rows = torch.cat([all_rows, all_rows])
                values = torch.cat([forward(both[c], both_rows[c]) for c in self._chunks(2 * n, width)])
            target, reference = values[:n].double().cpu().numpy(), values[n:].double().cpu().numpy()
            budget = self.tolerance * np.abs(target - reference)
            ig = IntegratedGradients(forward)
            # Adaptive quadrature: the path's integrand is smooth almost everywhere but changes sharply
            # near a few points (norms and softmaxes switching regime), so one fixed grid converges slowly.
            # Each segment is integrated by captum's Gauss-Legendre rule; a segment whose completeness gap
            # exceeds its share of the error budget (by length) is halved, until a text's step cap. Each
            # round integrates the pending segments of all texts in one batched pass.
            scores = torch.zeros(n, width, dtype=torch.float64)
            steps = [0] * n
            # f at the path points reached so far, per (row, point): a segment's completeness gap needs f at its two
            # ends, and a halved segment's children share its ends, so only each new midpoint runs a forward.
            at_point = {(row, 0.0): float(reference[row]) for row in range(n)}
            at_point.update({(row, 1.0): float(target[row]) for row in range(n)})
            pending = [(row, 0.0, 1.0) for row in range(n)]
            while pending:
                rows = torch.tensor([row for row, _, _ in pending], device=embeds.device)
                a = torch.tensor([lo for _, lo, _ in pending], dtype=embeds.dtype, device=embeds.device)[:, None, None]
                b = torch.tensor([hi for _, _, hi in pending], dtype=embeds.dtype, device=embeds.device)[:, None, None]
                change = embeds[rows] - reference_embeds[rows]
                starts, ends = reference_embeds[rows] + a * change, reference_embeds[rows] + b * change
                parts = []
                # One internal batch of captum holds at least one step of every segment given: cap the segments.
                for c in self._chunks(len(pending), width):
                    with torch.enable_grad():
                        attributions = ig.attribute(
                            ends[c],
                            baselines=starts[c],
                            additional_forward_args=(rows[c],),
                            n_steps=self.n_steps,
                            internal_batch_size=max(self.token_budget // width, len(rows[c])),
                        )
                    parts.append(attributions.sum(-1).detach().double().cpu())
                segment_scores = torch.cat(parts)
                # Completeness gap per segment, as captum's convergence delta: attributions' sum - (f(hi) - f(lo)).
                deltas = [
                    float(segment_scores[index].sum()) - (at_point[(row, hi)] - at_point[(row, lo)])
                    for index, (row, lo, hi) in enumerate(pending)
                ]
                for row, _, _ in pending:
                    steps[row] += self.n_steps
                if self.on_steps is not None:
                    self.on_steps(max(steps))
                scheduled = [0] * n  # segments already queued for the next round, per text
                undecided = [sum(1 for r, _, _ in pending if r == row) for row in range(n)]
                next_round = []
                for index, (row, lo, hi) in enumerate(pending):
                    undecided[row] -= 1
                    remaining = self.max_steps - steps[row] - self.n_steps * (scheduled[row] + undecided[row])
                    if abs(deltas[index]) > budget[row] * (hi - lo) and remaining >= 2 * self.n_steps:
                        middle = (lo + hi) / 2
                        next_round += [(row, lo, middle), (row, middle, hi)]
                        scheduled[row] += 2
                    else:
                        scores[row] += segment_scores[index]
                pending = next_round
                middles = [(row, lo) for row, lo, _ in next_round[1::2]]  # each split's second half starts there
                if middles:
                    points = torch.tensor([row for row, _ in middles], device=embeds.device)
                    alpha = torch.tensor([m for _, m in middles], dtype=embeds.dtype, device=embeds.device)
                    origin = reference_embeds[points]
                    inputs = origin + alpha[:, None, None] * (embeds[points] - origin)
                    with torch.no_grad():
                        values = torch.cat([forward(inputs[c], points[c]) for c in self._chunks(len(middles), width)])
                    at_point.update({key: float(v) for key, v in zip(middles, values.double().cpu(), strict=True)})
        results = []
        for row, text in enumerate(texts):
            row_scores = prepared.unpadded(row, scores)
            delta = float(target[row] - reference[row]) - float(row_scores.sum())
            result = Attribution(
                text,
                prepared.tokens[row],
                prepared.categories[row],
                row_scores,
                float(target[row]),
                float(reference[row]),
                delta,
                steps[row],
                quantity,
                baseline,
            )
            if result.relative_delta > self.tolerance:
                warnings.warn(
                    f"IG for {quantity} of {text[:40]!r} did not converge: relative delta "
                    f"{result.relative_delta:.3f} > {self.tolerance} at the cap of {self.max_steps} steps; "
                    "raise max_steps.",
                    stacklevel=3,
                )
            results.append(result)
        return results

    def token_shares_many(
        self, texts: Sequence[str], use_adapter: bool, baseline: Baseline = "pad"
    ) -> list[Attribution]:
        """``token_shares`` of each text; texts of similar length are batched (the encoder's batches)."""
        if baseline not in BASELINES:
            raise ConfigError(f"Unknown baseline {baseline!r}; choose one of: {', '.join(BASELINES)}.")
        texts = list(texts)
        results: list[Attribution | None] = [None] * len(texts)
        for group in self.encoder.batches(self.encoder.prepare(texts)):
            group_texts = [texts[i] for i in group]
            prepared = self.collate(group_texts)
            with torch.no_grad(), self.encoder.loaded.adapter_enabled(use_adapter):
                vectors = self.pooled_at(prepared.embeds, prepared.batch)
            directions = (vectors / vectors.norm(dim=-1, keepdim=True).clamp_min(1e-12)).detach()

            def along_direction(pooled: Tensor, rows: Tensor, directions: Tensor = directions) -> Tensor:
                return (pooled * directions[rows]).sum(-1)

            quantity = "norm of the pooled vector"
            attributions = self._attribute_many(prepared, group_texts, along_direction, use_adapter, baseline, quantity)
            for index, result in zip(group, attributions, strict=True):
                results[index] = result
        return [r for r in results if r is not None]

    def token_shares(self, text: str, use_adapter: bool, baseline: Baseline = "pad") -> Attribution:
        """Each token's contribution to the pooled vector's norm (projection on its own fixed direction)."""
        return self.token_shares_many([text], use_adapter, baseline)[0]

    def similarity(
        self, text_a: str, text_b: str, use_adapter: bool, baseline: Baseline = "text"
    ) -> SimilarityAttribution:
        """Cosine of A to B attributed to each text's tokens, the other text's vector held fixed."""
        prepared = self.collate([text_a, text_b])
        with torch.no_grad(), self.encoder.loaded.adapter_enabled(use_adapter):
            vectors = self.pooled_at(prepared.embeds, prepared.batch)
        units = vectors / vectors.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        cosine = float(units[0] @ units[1])
        others = units.flip(0)  # A is attributed against B's vector and B against A's

        def cosine_to_other(pooled: Tensor, rows: Tensor) -> Tensor:
            return (pooled * others[rows]).sum(-1) / pooled.norm(dim=-1).clamp_min(1e-12)

        a, b = self._attribute_many(prepared, [text_a, text_b], cosine_to_other, use_adapter, baseline, "cosine")
        a.quantity, b.quantity = "cosine to text B", "cosine to text A"
        return SimilarityAttribution(cosine, a, b)


@contextmanager
def frozen(model: torch.nn.Module):
    """Parameters without gradients while attributing: IG needs input gradients only."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for parameter, _ in flags:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)


def agreement(
    attention: Sequence[TextAttention],
    attributions: Sequence[Attribution],
    layer: int = -1,
    head: int | None = None,
) -> dict[str, Any]:
    """Spearman correlation of attention shares with attribution shares, per text and overall.

    Over the tokens the pooled token sees, sink and special tokens excluded (both measures are
    renormalised over the remaining tokens first; ranks do not change under that).
    """
    if len(attention) != len(attributions):
        raise ConfigError(f"{len(attention)} attention rows but {len(attributions)} attributions.")
    kept_categories = [CATEGORIES.index(c) for c in RENORMALISED]
    per_text, pooled_attention, pooled_attribution = [], [], []
    for item, attribution in zip(attention, attributions, strict=True):
        keys = len(item.categories)
        mask = np.isin(item.categories, kept_categories)
        weights = item.weights(layer, head, renormalise=True)[mask]
        shares = attribution.shares[:keys][mask]
        shares = shares / max(float(shares.sum()), 1e-12)
        rho = float(spearmanr(weights, shares).statistic) if mask.sum() >= 3 else float("nan")
        per_text.append(rho)
        pooled_attention.extend(weights)
        pooled_attribution.extend(shares)
    finite = [r for r in per_text if np.isfinite(r)]
    pooled = float(spearmanr(pooled_attention, pooled_attribution).statistic) if len(pooled_attention) >= 3 else None
    return {
        "per_text_rho": [round(r, 4) if np.isfinite(r) else None for r in per_text],
        "mean_rho": round(float(np.mean(finite)), 4) if finite else None,
        "pooled_rho": round(pooled, 4) if pooled is not None and np.isfinite(pooled) else None,
        "layer": layer,
        "head": head,
    }


@dataclass
class SimilarityComparison:
    """``Attributor.similarity`` of one pair for each setting compared (label -> result)."""

    results: dict[str, SimilarityAttribution]
    seconds: float

    def bars(self, side: Literal["a", "b"]) -> dict[str, dict[str, Any]]:
        """One text's attributions per setting, as ``analysis.plots.attribution_bars_figure`` draws them."""
        return {label: getattr(result, side).to_dict() for label, result in self.results.items()}


def compare_similarity(
    encoder: Encoder,
    text_a: str,
    text_b: str,
    max_steps: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> SimilarityComparison:
    """Which tokens make ``text_a`` and ``text_b`` similar, for the base (and the adapter where loaded).

    ``progress(done, total)`` counts IG steps against the cap (``total``: two attributions per setting, each at
    most ``max_steps``; one that converges early counts its whole cap when it ends). It is called between path
    segments, so an exception it raises stops the work there.
    """
    compared = sides(encoder.loaded.has_adapter)
    total = 2 * len(compared) * max_steps
    finished, last = 0, 0  # steps of the attributions already done (each counted at the cap); the current one's

    def on_steps(steps: int) -> None:
        nonlocal finished, last
        if steps <= last:  # a new attribution started
            finished += max_steps
        last = steps
        if progress is not None:
            progress(min(finished + steps, total), total)

    attributor = Attributor(encoder, max_steps=max_steps, on_steps=on_steps)
    started = time.perf_counter()
    if progress is not None:
        progress(0, total)
    results = {
        label: attributor.similarity(text_a, text_b, use_adapter=use_adapter) for label, use_adapter in compared.items()
    }
    if progress is not None:
        progress(total, total)
    return SimilarityComparison(results, time.perf_counter() - started)
