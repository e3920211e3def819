"""The encoder: texts -> prompt-wrapped tokens -> one forward -> pooled vectors, under one :class:`EmbeddingSetting`.

Speed comes from running the transformer without its LM head, batching texts sorted by length under a token
budget (little padding, :mod:`core.encoding.batching`), one forward serving every pooling and layer, base and
adapter sharing the layers below the adapter (:mod:`core.encoding.forward`), a token prefix every text of a batch
shares (a template's) run once for a causal decoder (``prefix_reuse``, exact: :mod:`core.encoding.prefix`), and
bf16 autocast where the CPU has bf16 units. A text's vector does not depend on its batch. ``token_passes`` counts
the tokens fed to the decoder (a shared trunk and a reused prefix once).

Five entry points serve every caller: :meth:`Encoder.encode` (one setting's vectors), :meth:`Encoder.encode_grid`
(many (pooling, layer) combinations, base and/or adapter, from one forward per batch, through the cache),
:meth:`Encoder.forward` (token states of a batch: training, attribution, capture) and
:meth:`Encoder.forward_variants` (base and adapter states of one batch); :meth:`Encoder.forward_shared` runs texts
that share prefixes with reference texts and with each other (perturbed texts), each shared prefix once.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from core.encoding.batching import (
    PaddingSide,
    PreparedText,
    batches,
    collate,
    prepare_text,
    validate_texts,
    without_appended_eos,
)
from core.encoding.cache import EmbeddingCache, settings_key
from core.encoding.family import family_references, family_states
from core.encoding.forward import PoolingPlan, check_pooling, forward_states, forward_variants, plan_poolings, to_device
from core.encoding.methods import (
    Ensemble,
    Method,
    PlaceholderTemplate,
    Template,
    check_method_for_model,
    method_template,
)
from core.encoding.pooling import LayerChoice, Pooling, PoolingMode, TokenStates
from core.encoding.prefix import ReferenceStates, TokenPasses, reuse_blocker, token_passes
from core.encoding.setting import EmbeddingSetting, model_setting
from core.models.registry import DEFAULT_MODEL, LoadedModel, load_model
from core.runtime.device import (
    FP16_MIN_COSINE,
    Precision,
    ResolvedPrecision,
    autocast,
    resolve_device,
    resolve_precision,
)
from core.runtime.errors import ConfigError

__all__ = [
    "ENGINE_VERSION",
    "Encoder",
    "PoolingPlan",
    "PreparedText",
    "validate_texts",
]

logger = logging.getLogger(__name__)
# Bump when a change alters vectors for the same settings, so stale cache entries are not served.
ENGINE_VERSION = 1
# Texts the fp16 check embeds in fp16 and fp32 (precision auto on a GPU without bf16).
FP16_PROBE_TEXTS = (
    "A short sentence.",
    "The committee postponed its decision on the new budget until the next quarterly meeting.",
    "what is the boiling point of water at high altitude",
    "Stocks fell sharply on Monday after the central bank raised interest rates by half a point.",
)
# Knobs of how the encoder runs, not of which vector a text gets (a setting): with_setting changes them too.
RUNTIME_KNOBS = ("attention_layer", "precision", "batch_tokens", "max_batch_size", "padding_side", "prefix_reuse")
Grid = dict[tuple[str, str], Float[np.ndarray, "texts hidden"]]


class Encoder:
    """Embeds texts with a decoder LM (or an encoder baseline), with or without a LoRA adapter, under one setting.

    Args:
        model: a packaged name, folder or hub id, or a :class:`LoadedModel` (then pass its adapter to
            ``load_model``).
        adapter: a LoRA adapter folder; its trained setting is the default one.
        setting: how a text becomes a vector; ``None`` builds it with :func:`model_setting` from ``method``,
            ``prompt``, ``pooling``, ``layer`` and ``max_length`` (the same one path as every CLI and page).
        attention_layer, precision, batch_tokens, max_batch_size, padding_side, cache, device: how it runs.
        prefix_reuse: run a token prefix shared by a batch's texts once (causal decoders, no gradients; exact);
            off gives full forwards, for comparison.

    Invariants: ``encoder.setting`` is the resolved setting (a TP method's layer range filled in for this model);
    ``method``, ``prompt`` (the template; ``None`` for an ensemble), ``pooling``, ``layer`` and ``max_length``
    are read from it.
    """

    def __init__(
        self,
        model: str | LoadedModel = DEFAULT_MODEL,
        adapter: str | Path | None = None,
        *,
        setting: EmbeddingSetting | None = None,
        method: str | Method | None = None,
        prompt: str | None = None,
        pooling: PoolingMode | None = None,
        layer: int | str | LayerChoice | None = None,
        max_length: int | None = None,
        attention_layer: int = -1,
        precision: Precision = "auto",
        batch_tokens: int = 8192,
        max_batch_size: int = 32,
        cache: bool | str | Path | EmbeddingCache = True,
        padding_side: PaddingSide = "right",
        device: str | torch.device | None = None,
        prefix_reuse: bool = True,
    ):
        chosen = {"method": method, "prompt": prompt, "pooling": pooling, "layer": layer, "max_length": max_length}
        chosen = {key: value for key, value in chosen.items() if value is not None}
        # A Method object may carry more than its spec (a custom TP placeholder): it is kept for this setting.
        self._method_object = chosen["method"] if not isinstance(chosen.get("method", ""), str) else None
        if self._method_object is not None:
            chosen["method"] = self._method_object.spec
        if setting is not None and chosen:
            raise TypeError(f"give either setting= or its fields ({', '.join(chosen)}), not both")
        if chosen:
            EmbeddingSetting.resolve(None, **chosen)  # a bad choice fails before the slow model load
        if isinstance(model, LoadedModel) and adapter is not None:
            raise ConfigError("Pass the adapter to load_model() when passing a LoadedModel.")
        # ``device=None``: where a passed LoadedModel already is, else auto (CUDA, then MPS, then CPU).
        target = resolve_device(device) if device is not None or not isinstance(model, LoadedModel) else None
        if isinstance(model, LoadedModel):
            if target is not None and target != model.device:
                model.to(target)
            self.loaded = model
        else:
            self.loaded = load_model(model, adapter, device=target)
        if cache is True:
            self.cache: EmbeddingCache | None = EmbeddingCache()
        elif cache is False:
            self.cache = None
        else:
            self.cache = cache if isinstance(cache, EmbeddingCache) else EmbeddingCache(cache)
        self.use_adapter = self.loaded.has_adapter
        self.last_truncated = 0
        self._configure(
            setting if setting is not None else model_setting(self.loaded, **chosen),
            attention_layer=attention_layer,
            precision=precision,
            batch_tokens=batch_tokens,
            max_batch_size=max_batch_size,
            padding_side=padding_side,
            prefix_reuse=prefix_reuse,
        )

    # ----- properties
    @property
    def dim(self) -> int:
        return self.loaded.hidden_size

    @property
    def num_hidden_states(self) -> int:
        return self.loaded.num_layers + 1

    @property
    def device(self) -> torch.device:
        return self.loaded.device

    @property
    def token_passes(self) -> TokenPasses:
        """Tokens fed to this model's decoder so far (every forward through its backbone, padding excluded)."""
        return token_passes(self.loaded)

    @property
    def tokenizer(self):
        return self.loaded.tokenizer

    @property
    def pooling(self) -> PoolingMode:
        return self.setting.pooling  # type: ignore[return-value]

    @property
    def layer(self) -> LayerChoice:
        return self.setting.layer

    @property
    def max_length(self) -> int:
        return self.setting.max_length

    # ----- the setting
    def _configure(
        self,
        setting: EmbeddingSetting,
        *,
        attention_layer: int,
        precision: Precision,
        batch_tokens: int,
        max_batch_size: int,
        padding_side: PaddingSide,
        prefix_reuse: bool,
    ) -> None:
        """Check ``setting`` and the runtime knobs against the model and take them (``__init__``, ``with_setting``)."""
        loaded = self.loaded
        given = self._method_object
        parsed = given if given is not None and given.spec == setting.method else setting.parsed_method
        self.method: Method = check_method_for_model(parsed, loaded.num_layers, loaded.is_causal)
        # The model's facts filled in (TP's layer range); prompt and pooling stay as resolved.
        self.setting = dataclasses.replace(setting, method=self.method.spec)
        self.prompt: Template | None = method_template(self.method, setting.prompt, "none")  # None: an ensemble
        check_pooling(setting.pooling, loaded.is_causal)  # type: ignore[arg-type]
        setting.layer.indices(self.num_hidden_states)
        layers = loaded.num_layers
        if not -layers <= attention_layer < layers:
            raise ConfigError(
                f"Attention layer {attention_layer} is out of range: this model has {layers} layers, so use "
                f"0..{layers - 1} or -{layers}..-1."
            )
        if padding_side not in ("right", "left"):
            raise ConfigError(f"Unknown padding side {padding_side!r}; choose right or left.")
        self.attention_layer = attention_layer
        self.batch_tokens = batch_tokens
        self.max_batch_size = max_batch_size
        self.padding_side = padding_side
        self.prefix_reuse = bool(prefix_reuse)
        token_passes(loaded)  # counting starts with the encoder
        # Last: the fp16 check embeds probe texts with every other setting in place.
        self.precision: ResolvedPrecision = resolve_precision(precision, self.device)
        if precision == "auto" and self.precision == "fp16" and not self._fp16_keeps_cosine():
            self.precision = "fp32"
        if isinstance(self.prompt, PlaceholderTemplate):
            self.prepare(["check"])  # a TP placeholder the tokenizer splits fails here, not mid-run

    def with_setting(self, setting: EmbeddingSetting | None = None, **changes: Any) -> Encoder:
        """A new encoder that shares this one's loaded model and cache (no reload), with ``setting`` or this one's
        setting changed by ``changes`` (:meth:`EmbeddingSetting.replace`: a new method starts from its own prompt
        and pooling). ``changes`` may also set the runtime knobs (precision, attention_layer, batch_tokens,
        max_batch_size, padding_side, prefix_reuse). ``None`` values count as not given; invalid ones raise
        ``ConfigError``.
        """
        changes = {key: value for key, value in changes.items() if value is not None}
        knobs = {key: changes.pop(key) for key in RUNTIME_KNOBS if key in changes}
        method_object = self._method_object
        if "method" in changes and not isinstance(changes["method"], str):
            method_object, changes["method"] = changes["method"], changes["method"].spec
        if setting is not None and changes:
            raise TypeError(f"give either a setting or its fields ({', '.join(changes)}), not both")
        new = setting if setting is not None else (self.setting.replace(**changes) if changes else self.setting)
        other = copy.copy(self)
        other._method_object = method_object
        other._configure(new, **{key: knobs.get(key, getattr(self, key)) for key in RUNTIME_KNOBS})
        other.last_truncated = 0
        return other

    def _view(self, choices: dict[str, Any]) -> Encoder:
        """This encoder, or a view with the per-call setting ``choices`` (the same path as :meth:`with_setting`)."""
        return self.with_setting(**choices) if any(value is not None for value in choices.values()) else self

    def plan(self, combos: Sequence[tuple[str, int | str | LayerChoice]] | None = None) -> PoolingPlan:
        """The poolings for ``combos`` of (mode, layer), and what one forward must keep to serve them all.

        ``None`` plans the setting's own pooling and layer. Modes and layers are validated for this model.
        """
        combos = [(self.pooling, self.layer)] if combos is None else combos
        return plan_poolings(self.loaded, combos, self.attention_layer)

    # ----- tokenization and batching
    def prepare(self, texts: Sequence[str], *, allow_empty: bool = False, **choices: Any) -> list[PreparedText]:
        """Wrap and tokenize under the setting (or a view with ``choices``, e.g. ``prompt="eol"``).

        ``allow_empty`` lets empty texts through: the template around nothing (the prompt alone) is a valid
        input, which perturbation tests need once every token of a text is removed.
        """
        view = self._view(choices)
        if view.prompt is None:
            raise ConfigError(
                f"The {view.method.spec} method has several prompts: prepare texts under one of them "
                "(encoder.with_setting(method='plain', prompt=...))."
            )
        causal = view.loaded.is_causal
        return [
            prepare_text(view.tokenizer, text, view.prompt, view.max_length, causal=causal)
            for text in validate_texts(texts, allow_empty=allow_empty)
        ]

    def batches(self, prepared: Sequence[PreparedText]) -> list[list[int]]:
        """Indices grouped longest first, each batch's padded size within the token budget."""
        return batches(prepared, self.batch_tokens, self.max_batch_size)

    def collate(self, items: Sequence[PreparedText]) -> dict[str, Tensor]:
        return collate(items, self.tokenizer.pad_token_id, self.padding_side)

    def to_device(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """``batch``'s tensors on the model's device (a no-op where they already are)."""
        return to_device(batch, self.loaded)

    def autocast(self):
        return autocast(self.device, self.precision)

    # ----- forward
    def forward(
        self,
        batch: dict[str, Tensor],
        plan: PoolingPlan | None = None,
        inputs_embeds: Float[Tensor, "batch seq hidden"] | None = None,
        *,
        use_adapter: bool | None = None,
        reuse: bool = False,
    ) -> TokenStates:
        """One forward of the backbone; keeps the hidden states and attention rows ``plan`` needs.

        ``plan`` defaults to the setting's pooling and layer. ``use_adapter`` switches the adapter on or off for
        this forward (``None``: as the model is now). ``inputs_embeds`` replaces the embedding lookup (integrated
        gradients). Runs with whatever grad mode the caller set (training calls it with gradients on).
        ``reuse``: run the batch's shared prefix once where exact (and ``prefix_reuse`` is on). Off by default:
        callers that hook the backbone around this call (attention capture) must see every token run.
        """
        plan = plan if plan is not None else self.plan()
        reuse = reuse and self.prefix_reuse
        if use_adapter is None:
            with self.loaded.lock:
                return forward_states(self.loaded, self.method, self.precision, batch, plan, inputs_embeds, reuse=reuse)
        with self.loaded.adapter_enabled(use_adapter):
            return forward_states(self.loaded, self.method, self.precision, batch, plan, inputs_embeds, reuse=reuse)

    def forward_variants(
        self, batch: dict[str, Tensor], plan: PoolingPlan | None, variants: Sequence[bool]
    ) -> dict[bool, TokenStates]:
        """Token states of ``batch`` per variant (base ``False``, adapter ``True``); for both, the layers below the
        adapter's lowest LoRA layer run once, and the states equal two separate forwards."""
        plan = plan if plan is not None else self.plan()
        with self.loaded.lock:  # the trunk's recording hooks and adapter switch are the model's, for all threads
            return forward_variants(
                self.loaded, self.method, self.precision, batch, plan, variants, reuse=self.prefix_reuse
            )

    def forward_shared(
        self,
        items: Sequence[PreparedText],
        plan: PoolingPlan | None,
        variants: Sequence[bool],
        references: tuple[ReferenceStates, Sequence[int]] | None = None,
    ) -> Iterator[tuple[list[int], dict[bool, TokenStates]]]:
        """Token states of ``items`` per variant, batch by batch: (the batch's indices into ``items``, its states).

        ``references``: (:meth:`references` of texts these share prefixes with, each item's reference index). With
        ``prefix_reuse`` on, a reference and the items pointing to it form a family, and each item runs only the
        tokens neither the reference nor an item run before it has run (:func:`~core.encoding.prefix.plan_reuse`):
        in waves, each item reading the key/value cache of its parent from an earlier wave, batched by the tokens
        they run (:func:`~core.encoding.family.family_states`). The states equal full forwards'. Off (or where reuse
        is not exact), plain batches. Either way an appended EOS no pooling of ``plan`` reads is left out.
        """
        plan = plan if plan is not None else self.plan()
        variants = tuple(dict.fromkeys(variants))
        items = self.runnable(items, plan)
        blocked = reuse_blocker(self.loaded, plan.attention_layers, None) is not None
        if references is None or not self.prefix_reuse or blocked:
            for group in self.batches(items):
                yield group, self.forward_variants(self.collate([items[i] for i in group]), plan, variants)
            return
        yield from family_states(
            self.loaded, self.method, self.precision, items, plan, variants, references, self.collate,
            self.batch_tokens, self.max_batch_size,
        )  # fmt: skip

    def references(
        self, items: Sequence[PreparedText], plan: PoolingPlan | None, variants: Sequence[bool]
    ) -> ReferenceStates:
        """Prepared texts run once per variant, their key/value cache and the states ``plan`` reads kept, for
        :meth:`forward_shared`'s ``references`` (perturbed texts against their originals); with prefix reuse their
        shared prefix runs once (``core.encoding.family.family_references``)."""
        plan = plan if plan is not None else self.plan()
        with torch.inference_mode(), self.loaded.lock:
            return family_references(
                self.loaded, self.method, self.precision, self.runnable(items, plan), plan, variants, self.collate,
                self.batch_tokens, self.max_batch_size, reuse=self.prefix_reuse,
            )  # fmt: skip

    @staticmethod
    def runnable(items: Sequence[PreparedText], plan: PoolingPlan) -> Sequence[PreparedText]:
        """``items`` as a forward for ``plan`` runs them: without an appended EOS no pooling of the plan reads."""
        return items if plan.reads_appended_eos else [without_appended_eos(item) for item in items]

    # ----- encoding
    def settings(self, prompt: Template | None, pooling: Pooling, use_adapter: bool) -> dict[str, object]:
        """Everything but the text that determines a vector: the embedding cache's key (its fields and their order
        are part of every stored key)."""
        return {
            **self.loaded.identity(use_adapter),
            "engine": ENGINE_VERSION,
            "prompt": prompt.template if prompt is not None else None,
            **self.method.settings(),
            **pooling.get_config_dict(),
            "attention_layer": pooling.attention_layer if pooling.mode == "attention" else None,
            "max_length": self.max_length,
            "precision": self.precision,
            # CPU keys stay as before this setting existed, so existing cache entries keep serving.
            **({"device": self.device.type} if self.device.type != "cpu" else {}),
        }

    def encode(
        self,
        texts: Sequence[str],
        *,
        normalize: bool = False,
        use_adapter: bool | None = None,
        show_progress: bool = False,
        **choices: Any,
    ) -> Float[np.ndarray, "texts hidden"]:
        """Embed ``texts`` under the setting: float32 array ``(len(texts), dim)``; L2-normalised if ``normalize``.

        ``use_adapter`` picks base or adapter (``None``: the adapter where there is one). ``choices`` (``prompt``,
        ``pooling``, ``layer``, ...) embed under ``with_setting(**choices)`` instead.
        """
        view = self._view(choices)
        variant = view.use_adapter if use_adapter is None else use_adapter
        grid = view.encode_grid(texts, variants=(variant,), show_progress=show_progress)
        vectors = next(iter(grid[variant].values()))
        self.last_truncated = view.last_truncated
        return _normalized(vectors) if normalize else vectors

    def encode_grid(
        self,
        texts: Sequence[str],
        combos: Sequence[tuple[str, int | str | LayerChoice]] | None = None,
        *,
        variants: Sequence[bool] | None = None,
        normalize: bool = False,
        show_progress: bool = False,
        **choices: Any,
    ) -> dict[bool, Grid]:
        """Vectors for every (pooling, layer) of ``combos`` (``None``: the setting's) and every variant (base
        ``False``, adapter ``True``; ``None``: the encoder's default), from one forward pass per batch.

        Returns ``{use_adapter: {(pooling, str(layer)): float32 array (len(texts), dim)}}``. Cached vectors come
        from the cache; the rest run one forward per batch, base and adapter sharing the layers below the adapter.
        """
        view = self._view(choices)
        if view is not self:
            grid = view.encode_grid(texts, combos, variants=variants, normalize=normalize, show_progress=show_progress)
            self.last_truncated = view.last_truncated
            return grid
        texts = validate_texts(texts)
        variants = tuple(dict.fromkeys(variants if variants is not None else (self.use_adapter,)))
        if True in variants and not self.loaded.has_adapter:
            raise ConfigError("No adapter is attached to this model; load one with adapter=PATH (or --adapter).")
        combos = [(self.pooling, self.layer)] if combos is None else combos
        if isinstance(self.method, Ensemble):  # method hook point: one plain pass per prompt, averaged
            grids = self._encode_ensemble(texts, combos, variants, show_progress)
        else:
            grids = self._encode_cached(texts, self.prompt, self.plan(combos), variants, show_progress)
        if normalize:
            grids = {variant: {c: _normalized(v) for c, v in grid.items()} for variant, grid in grids.items()}
        return grids

    def _encode_cached(
        self,
        texts: list[str],
        template: Template,
        plan: PoolingPlan,
        variants: tuple[bool, ...],
        show_progress: bool,
    ) -> dict[bool, Grid]:
        poolings = plan.poolings
        results = {
            variant: {(p.mode, str(p.layer)): np.zeros((len(texts), self.dim), dtype=np.float32) for p in poolings}
            for variant in variants
        }
        keys = {
            (variant, (p.mode, str(p.layer))): settings_key(self.settings(template, p, variant))
            for variant in variants
            for p in poolings
        }
        everything = set(range(len(texts)))
        missing: dict[bool, set[int]] = {variant: set(everything) for variant in variants}
        if self.cache is not None and texts:
            missing = {variant: set() for variant in variants}
            for (variant, combo), key in keys.items():
                found = self.cache.get_many(key, texts)
                for index, vector in found.items():
                    results[variant][combo][index] = vector
                missing[variant].update(everything - set(found))
        # Cached texts were truncated too if they are long: count them by tokenizing alone (cheap), skipping
        # texts too short to reach max_length (a token covers at least one byte; 8 spare for special tokens).
        causal = self.loaded.is_causal
        truncated = sum(
            prepare_text(self.tokenizer, texts[i], template, self.max_length, causal=causal).truncated
            for i in everything - set().union(*missing.values())
            if len(template.wrap(texts[i]).string.encode()) + 8 > self.max_length
        )
        # Texts missing on both sides run one shared-trunk pair; a text cached on one side runs the other alone.
        both = set.intersection(*missing.values()) if len(variants) == 2 else set()
        runs = [(variants, both), *(((variant,), missing[variant] - both) for variant in variants)]
        for run_variants, indices in runs:
            if not indices:
                continue
            todo = sorted(indices)
            computed = self._compute([texts[i] for i in todo], plan, run_variants, show_progress)
            truncated += self.last_truncated
            for variant, by_combo in computed.items():
                for combo, vectors in by_combo.items():
                    results[variant][combo][todo] = vectors
                    if self.cache is not None:
                        self.cache.put_many(keys[(variant, combo)], [texts[i] for i in todo], vectors)
        self.last_truncated = truncated
        if truncated:
            warnings.warn(
                f"{truncated} of {len(texts)} texts exceeded max_length={self.max_length} tokens and "
                "were truncated before wrapping.",
                stacklevel=4,
            )
        return results

    def _encode_ensemble(
        self,
        texts: list[str],
        combos: Sequence[tuple[str, int | str | LayerChoice]],
        variants: tuple[bool, ...],
        show_progress: bool,
    ) -> dict[bool, Grid]:
        method = self.method
        assert isinstance(method, Ensemble)
        plan = self.plan(combos)  # validates every mode and layer before any work
        grids: dict[bool, list[Grid]] = {variant: [] for variant in variants}
        truncated = 0
        for template in method.templates():
            # Each prompt as a plain setting: its vectors are cached as plain ones, and a base+adapter pair
            # shares the trunk per prompt.
            plain = self.with_setting(
                dataclasses.replace(self.setting, method=method.plain.spec, prompt=template.template)
            )
            both = plain._encode_cached(texts, plain.prompt, plan, variants, show_progress)
            for variant in variants:
                grids[variant].append(both[variant])
            truncated = max(truncated, plain.last_truncated)
        self.last_truncated = truncated
        return {variant: method.average(grids[variant]) for variant in variants}

    def _compute(
        self, texts: list[str], plan: PoolingPlan, variants: Sequence[bool], show_progress: bool
    ) -> dict[bool, Grid]:
        prepared = self.prepare(texts)
        self.last_truncated = sum(item.truncated for item in prepared)
        out = {
            variant: {(p.mode, str(p.layer)): np.zeros((len(texts), self.dim), dtype=np.float32) for p in plan.poolings}
            for variant in variants
        }
        run = self.runnable(prepared, plan)  # the bar counts the tokens the forwards run
        bar = tqdm(total=sum(len(item.input_ids) for item in run), unit="tok", desc="embedding",
                   disable=not show_progress, leave=False)  # fmt: skip
        with torch.inference_mode():
            for group, states in self.forward_shared(prepared, plan, variants):
                for variant, variant_states in states.items():
                    for pooling in plan.poolings:
                        out[variant][(pooling.mode, str(pooling.layer))][group] = pooling(variant_states).cpu().numpy()
                bar.update(sum(len(run[i].input_ids) for i in group))
        bar.close()
        return out

    # ----- precision
    def _fp16_keeps_cosine(self) -> bool:
        """Whether fp16 keeps every probe vector within cosine :data:`FP16_MIN_COSINE` of fp32 (checked once per
        model, device, method, prompt and pooling: precision ``auto`` on a GPU without bf16)."""
        template = self.prompt.template if self.prompt is not None else None
        key = (self.device.type, self.method.spec, template, self.pooling, str(self.layer))
        verdicts = self.loaded.fp16_verdicts
        if key not in verdicts:
            cosine = self.precision_agreement("fp16", list(FP16_PROBE_TEXTS))
            verdicts[key] = cosine >= FP16_MIN_COSINE
            logger.info(
                "fp16 probe on %s: min cosine %.5f to fp32 -> %s",
                self.device,
                cosine,
                "fp16" if verdicts[key] else "fp32",
            )
        return verdicts[key]

    def precision_agreement(self, precision: ResolvedPrecision, texts: Sequence[str]) -> float:
        """The smallest cosine between ``texts``' vectors in ``precision`` and in fp32 (no cache)."""
        vectors = {}
        for name in ("fp32", precision):
            probe = copy.copy(self)
            probe.precision, probe.cache = name, None
            vectors[name] = probe.encode(list(texts), normalize=True, use_adapter=self.loaded.has_adapter)
        return float((vectors["fp32"] * vectors[precision]).sum(1).min())


def _normalized(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
