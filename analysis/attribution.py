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
``max_steps`` gradient evaluations in all.
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
from core.encoder import Encoder
from core.errors import ConfigError

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


class Attributor:
    """IG on the input embeddings of ``encoder``'s model, pooled as the encoder pools."""

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
    def _prepare(self, text: str) -> tuple[dict[str, Tensor], list[str], list[str]]:
        item = self.encoder.prepare([text])[0]
        query = query_index(item, self.token)
        batch = self.encoder.collate([item])
        tokens = [self.encoder.tokenizer.decode([i]) for i in item.input_ids]
        categories = [CATEGORIES[c] for c in token_categories(item, len(item.input_ids) - 1)]
        batch["query"] = torch.tensor([query])
        return self.encoder.to_device(batch), tokens, categories

    def _embed(self, batch: dict[str, Tensor]) -> Float[Tensor, "1 seq hidden"]:
        return self.encoder.loaded.backbone.get_input_embeddings()(batch["input_ids"]).detach()

    def _pooled(self, embeds: Float[Tensor, "n seq hidden"], batch: dict[str, Tensor]) -> Float[Tensor, "n hidden"]:
        """The encoder's pooled vectors for ``n`` input-embedding points of the one text in ``batch``."""
        n = embeds.shape[0]
        repeated = {key: value.expand(n, *value.shape[1:]) for key, value in batch.items()}
        states = self.encoder.forward(repeated, self.plan, inputs_embeds=embeds)
        return self.plan.poolings[0](states)

    def pooled(self, text: str, use_adapter: bool) -> Float[Tensor, " hidden"]:
        """The pooled vector of ``text`` through the embedding path IG differentiates."""
        batch, _, _ = self._prepare(text)
        with torch.no_grad(), self.encoder.loaded.adapter_enabled(use_adapter):
            return self._pooled(self._embed(batch), batch)[0]

    def _reference_embedding(self) -> Float[Tensor, " hidden"]:
        """The pad token's embedding, or EOS's where the pad row is zero (Llama initialises it so)."""
        table = self.encoder.loaded.backbone.get_input_embeddings().weight.detach()
        tokenizer = self.encoder.tokenizer
        for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
            if token_id is not None and float(table[token_id].norm()) > 0:
                return table[token_id]
        return torch.zeros_like(table[0])

    def _baseline(self, embeds: Tensor, batch: dict[str, Tensor], baseline: Baseline) -> Tensor:
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

    # ----- integrated gradients
    def _attribute(
        self,
        text: str,
        scalar: Callable[[Tensor], Tensor],
        use_adapter: bool,
        baseline: Baseline,
        quantity: str,
        prepared: tuple[dict[str, Tensor], list[str], list[str]] | None = None,
    ) -> Attribution:
        batch, tokens, categories = prepared or self._prepare(text)
        embeds = self._embed(batch)
        reference_embeds = self._baseline(embeds, batch, baseline)

        def forward(inputs: Tensor) -> Tensor:
            return scalar(self._pooled(inputs, batch))

        width = embeds.shape[1]
        internal = max(1, self.token_budget // width)
        with self.encoder.loaded.adapter_enabled(use_adapter), _frozen(self.encoder.loaded.model):
            ig = IntegratedGradients(forward)

            def point(alpha: float) -> Tensor:
                return reference_embeds + alpha * (embeds - reference_embeds)

            def value(alpha: float) -> float:
                with torch.no_grad():
                    return float(forward(point(alpha))[0])

            def segment(a: float, b: float) -> tuple[Tensor, float]:
                with torch.enable_grad():
                    attributions, delta = ig.attribute(
                        point(b),
                        baselines=point(a),
                        n_steps=self.n_steps,
                        internal_batch_size=internal,
                        return_convergence_delta=True,
                    )
                return attributions[0].sum(-1).detach().double(), float(delta[0])

            target, reference = value(1.0), value(0.0)
            budget = self.tolerance * abs(target - reference)
            # Adaptive quadrature: the path's integrand is smooth almost everywhere but changes sharply
            # near a few points (norms and softmaxes switching regime), so one fixed grid converges slowly.
            # Each segment is integrated by captum's Gauss-Legendre rule; a segment whose completeness gap
            # exceeds its share of the error budget (by length) is halved, until the step cap.
            pending, done, steps = [(0.0, 1.0)], [], 0
            while pending:
                a, b = pending.pop()
                scores_ab, delta_ab = segment(a, b)
                steps += self.n_steps
                if self.on_steps is not None:
                    self.on_steps(steps)
                remaining = self.max_steps - steps - self.n_steps * len(pending)
                if abs(delta_ab) > budget * (b - a) and remaining >= 2 * self.n_steps:
                    middle = (a + b) / 2
                    pending += [(middle, b), (a, middle)]
                else:
                    done.append((scores_ab, delta_ab))
            scores = torch.stack([sc for sc, _ in done]).sum(0).cpu().numpy()
            delta = (target - reference) - float(scores.sum())
            result = Attribution(text, tokens, categories, scores, target, reference, delta, steps, quantity, baseline)
        if result.relative_delta > self.tolerance:
            warnings.warn(
                f"IG for {quantity} of {text[:40]!r} did not converge: relative delta {result.relative_delta:.3f} > "
                f"{self.tolerance} at the cap of {self.max_steps} steps; raise max_steps.",
                stacklevel=3,
            )
        return result

    def token_shares(self, text: str, use_adapter: bool, baseline: Baseline = "pad") -> Attribution:
        """Each token's contribution to the pooled vector's norm (projection on its own fixed direction)."""
        prepared = self._prepare(text)
        with torch.no_grad(), self.encoder.loaded.adapter_enabled(use_adapter):
            vector = self._pooled(self._embed(prepared[0]), prepared[0])[0]
        direction = (vector / vector.norm().clamp_min(1e-12)).detach()
        return self._attribute(
            text, lambda pooled: pooled @ direction, use_adapter, baseline, "norm of the pooled vector", prepared
        )

    def similarity(
        self, text_a: str, text_b: str, use_adapter: bool, baseline: Baseline = "text"
    ) -> SimilarityAttribution:
        """Cosine of A to B attributed to each text's tokens, the other text's vector held fixed."""
        vector_a, vector_b = self.pooled(text_a, use_adapter), self.pooled(text_b, use_adapter)
        cosine = float(torch.nn.functional.cosine_similarity(vector_a, vector_b, dim=0))

        def cosine_to(fixed: Tensor) -> Callable[[Tensor], Tensor]:
            unit = fixed / fixed.norm().clamp_min(1e-12)
            return lambda pooled: (pooled @ unit) / pooled.norm(dim=-1).clamp_min(1e-12)

        a = self._attribute(text_a, cosine_to(vector_b), use_adapter, baseline, "cosine to text B")
        b = self._attribute(text_b, cosine_to(vector_a), use_adapter, baseline, "cosine to text A")
        return SimilarityAttribution(cosine, a, b)


@contextmanager
def _frozen(model: torch.nn.Module):
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
