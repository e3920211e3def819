"""The encoder: texts -> prompt-wrapped tokens -> one forward -> pooled vectors.

Speed comes from running the transformer without its LM head, batching texts sorted by length
under a token budget (little padding), and bf16 autocast where the CPU has bf16 units. A text's
vector does not depend on its batch: position ids come from the attention mask, and pooled
positions are explicit, so padding side and batch-mates do not matter.
"""

from __future__ import annotations

import copy
import logging
import math
import warnings
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from core.encoding.cache import EmbeddingCache, settings_key
from core.encoding.capture import capture_attention_rows
from core.encoding.methods import (
    Ensemble,
    Method,
    Template,
    backbone_hooks,
    check_method_for_model,
    method_template,
    parse_method,
    placeholder_index,
    pooled_span,
)
from core.encoding.pooling import (
    ENCODER_POOLING_MODES,
    POOLING_MODES,
    LayerChoice,
    Pooling,
    PoolingMode,
    TokenStates,
)
from core.encoding.prompts import PLACEHOLDER, PromptTemplate
from core.encoding.roles import TEXT_ROLES, Role, token_roles
from core.encoding.setting import default_pooling
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

PaddingSide = Literal["right", "left"]
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


@dataclass(frozen=True)
class PoolingPlan:
    """What one forward must keep so that each of ``poolings`` can read its states.

    ``hidden_indices`` are non-negative indices into the hidden states (0 = embeddings) and
    ``attention_layers`` the 0-based decoder layers whose last-token attention row is captured.
    """

    poolings: tuple[Pooling, ...]
    hidden_indices: tuple[int, ...]
    attention_layers: tuple[int, ...]


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


class Encoder:
    """Embeds texts with a decoder LM (or an encoder baseline), with or without a LoRA adapter.

    ``prompt``, ``pooling`` and ``layer`` set defaults that each ``encode`` call may override; the
    defaults are what mteb gets through ``analysis.clustering.mteb_encoder.MtebEncoder`` (core loads no mteb).
    """

    def __init__(
        self,
        model: str | LoadedModel = DEFAULT_MODEL,
        adapter: str | Path | None = None,
        *,
        prompt: str | PromptTemplate | None = None,
        pooling: PoolingMode | None = None,
        layer: int | str | None = None,
        attention_layer: int = -1,
        precision: Precision = "auto",
        max_length: int | None = None,
        batch_tokens: int = 1024,
        max_batch_size: int = 64,
        cache: bool | str | Path | EmbeddingCache = True,
        padding_side: PaddingSide = "right",
        method: str | Method = "plain",
        device: str | torch.device | None = None,
    ):
        method = parse_method(method)
        if prompt is not None:
            method_template(method, prompt, prompt)  # fail before the slow model load
        if pooling is not None and pooling not in POOLING_MODES:
            raise ConfigError(f"Unknown pooling {pooling!r}; choose one of: {', '.join(POOLING_MODES)}.")
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
        # An adapter records the prompt, pooling, layer and max length it was trained with: they are the
        # defaults, so inference matches training unless the caller overrides them.
        trained = self.loaded.adapter_metadata
        max_length = max_length if max_length is not None else int(trained.get("max_length", 512))
        self._configure(
            method=method,
            prompt=prompt,
            default_prompt=trained.get("prompt", "none"),
            # Neither chosen nor trained: a method's published pooling (last token for tp and MetaEOL).
            pooling=pooling
            or trained.get("pooling")
            or ("mean" if method.kind == "plain" else default_pooling(method.spec, None)),
            layer=layer if layer is not None else trained.get("layer", -1),
            attention_layer=attention_layer,
            precision=precision,
            max_length=max_length,
            batch_tokens=batch_tokens,
            max_batch_size=max_batch_size,
            padding_side=padding_side,
        )
        if cache is True:
            self.cache: EmbeddingCache | None = EmbeddingCache()
        elif cache is False:
            self.cache = None
        else:
            self.cache = cache if isinstance(cache, EmbeddingCache) else EmbeddingCache(cache)
        self.use_adapter = self.loaded.has_adapter
        self.last_truncated = 0
        if self.prompt is not None and not isinstance(self.prompt, PromptTemplate):
            self.prepare(["check"])  # a TP placeholder the tokenizer splits fails here, not mid-run

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
    def tokenizer(self):
        return self.loaded.tokenizer

    def _check_pooling(self, pooling: str) -> PoolingMode:
        valid = POOLING_MODES if self.loaded.is_causal else ENCODER_POOLING_MODES
        if pooling not in valid:
            kind = "decoder" if self.loaded.is_causal else "bidirectional encoder"
            raise ConfigError(f"Unknown pooling {pooling!r} for a {kind}; choose one of: {', '.join(valid)}.")
        return pooling  # type: ignore[return-value]

    def plan(self, combos: Sequence[tuple[str, int | str | LayerChoice]] | None = None) -> PoolingPlan:
        """The poolings for ``combos`` of (mode, layer), and what one forward must keep to serve them all.

        ``None`` plans the encoder's own pooling and layer. Modes and layers are validated for this model.
        """
        combos = [(self.pooling, self.layer)] if combos is None else combos
        poolings = tuple(Pooling(self._check_pooling(mode), layer, self.attention_layer) for mode, layer in combos)
        hidden = sorted({i for p in poolings for i in p.layer.indices(self.num_hidden_states)})
        layers = self.loaded.num_layers
        attention = sorted({p.attention_layer % layers for p in poolings if p.mode == "attention"})
        return PoolingPlan(poolings, tuple(hidden), tuple(attention))

    # ----- settings
    def _configure(
        self,
        *,
        method: Method,
        prompt: str | Template | None,
        default_prompt: str | Template | None,
        pooling: str,
        layer: int | str | LayerChoice,
        attention_layer: int,
        precision: Precision,
        max_length: int,
        batch_tokens: int,
        max_batch_size: int,
        padding_side: PaddingSide,
    ) -> None:
        """Validate and set every setting but the model and cache (shared by ``__init__`` and ``with_settings``).

        ``prompt`` is the caller's explicit one (checked against the method); without it a plain method wraps with
        ``default_prompt`` (an adapter's trained prompt) and echo/tp with their own template.
        """
        self.method = check_method_for_model(method, self.loaded.num_layers, self.loaded.is_causal)
        # None for an ensemble, whose prompts are in the method.
        self.prompt = method_template(self.method, prompt, default_prompt if default_prompt is not None else "none")
        self.pooling = self._check_pooling(pooling)
        self.layer = LayerChoice.parse(layer)
        self.layer.indices(self.num_hidden_states)
        layers = self.loaded.num_layers
        if not -layers <= attention_layer < layers:
            raise ConfigError(
                f"Attention layer {attention_layer} is out of range: this model has {layers} layers, so use "
                f"0..{layers - 1} or -{layers}..-1."
            )
        self.attention_layer = attention_layer
        if max_length < 4:
            raise ConfigError(f"max_length={max_length} is too small; use at least 4 tokens.")
        self.max_length = max_length
        if padding_side not in ("right", "left"):
            raise ConfigError(f"Unknown padding side {padding_side!r}; choose right or left.")
        self.batch_tokens = batch_tokens
        self.max_batch_size = max_batch_size
        self.padding_side = padding_side
        # Last: the fp16 check embeds probe texts with every other setting in place.
        self.precision: ResolvedPrecision = resolve_precision(precision, self.device)
        if precision == "auto" and self.precision == "fp16" and not self._fp16_keeps_cosine():
            self.precision = "fp32"

    def with_settings(
        self,
        *,
        method: str | Method | None = None,
        prompt: str | PromptTemplate | None = None,
        pooling: PoolingMode | None = None,
        layer: int | str | LayerChoice | None = None,
        attention_layer: int | None = None,
        precision: Precision | None = None,
        max_length: int | None = None,
        batch_tokens: int | None = None,
        max_batch_size: int | None = None,
        padding_side: PaddingSide | None = None,
    ) -> Encoder:
        """A new encoder with some settings changed that shares this one's loaded model and cache (no reload).

        Settings left ``None`` keep this encoder's values; invalid ones raise ``ConfigError`` as in ``__init__``.
        """
        other = copy.copy(self)
        new_method = self.method if method is None else parse_method(method)
        same_method = method is None or new_method == self.method
        other._configure(
            method=new_method,
            # The current template stays unless the method changes (a new method brings its own template).
            prompt=prompt if prompt is not None or not same_method else self.prompt,
            default_prompt=None,
            pooling=self.pooling if pooling is None else pooling,
            layer=self.layer if layer is None else layer,
            attention_layer=self.attention_layer if attention_layer is None else attention_layer,
            precision=self.precision if precision is None else precision,
            max_length=self.max_length if max_length is None else max_length,
            batch_tokens=self.batch_tokens if batch_tokens is None else batch_tokens,
            max_batch_size=self.max_batch_size if max_batch_size is None else max_batch_size,
            padding_side=self.padding_side if padding_side is None else padding_side,
        )
        other.last_truncated = 0
        return other

    # ----- tokenization
    def template(self, prompt: str | Template | None = None) -> Template:
        """The template texts are wrapped with: ``prompt`` checked against the method, or the default."""
        template = method_template(self.method, prompt, self.prompt) if prompt is not None else self.prompt
        if template is None:
            raise ConfigError(
                f"The {self.method.spec} method has several prompts: give one with prompt=... to prepare texts."
            )
        return template

    def prepare(
        self, texts: Sequence[str], prompt: str | Template | None = None, *, allow_empty: bool = False
    ) -> list[PreparedText]:
        """Wrap and tokenize; over-long texts are cut before wrapping so the template's end survives.

        ``allow_empty`` lets empty texts through: the template around nothing (the prompt alone) is a valid
        input, which perturbation tests need once every token of a text is removed.
        """
        template = self.template(prompt)
        return [self._prepare_one(text, template) for text in validate_texts(texts, allow_empty=allow_empty)]

    def _prepare_one(self, text: str, template: Template) -> PreparedText:
        tokenizer = self.tokenizer
        eos = tokenizer.eos_token_id if self.loaded.is_causal else None
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
            if total <= self.max_length:
                break
            # Cut the text at a token boundary and retry; the loop ends since ``keep`` shrinks.
            text_offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
            copies = template.template.count(PLACEHOLDER)  # echo gives the text twice: cut half as many tokens
            keep = len(text_offsets) - math.ceil((total - self.max_length) / copies) if keep is None else keep - 1
            if keep < 1:
                raise ConfigError(
                    f"The prompt {template.template!r} leaves no room for text within max_length={self.max_length} "
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

    # ----- batching and forward
    def batches(self, prepared: Sequence[PreparedText]) -> list[list[int]]:
        """Indices grouped longest first, each batch's padded size within the token budget."""
        order = sorted(range(len(prepared)), key=lambda i: -len(prepared[i].input_ids))
        groups: list[list[int]] = []
        for index in order:
            group = groups[-1] if groups else None
            width = len(prepared[group[0]].input_ids) if group else 0  # first is the longest
            if group and len(group) < self.max_batch_size and width * (len(group) + 1) <= self.batch_tokens:
                group.append(index)
            else:
                groups.append([index])
        return groups

    def collate(self, items: Sequence[PreparedText]) -> dict[str, Tensor]:
        width = max(len(item.input_ids) for item in items)
        pad = self.tokenizer.pad_token_id
        pad = pad if pad is not None else 0
        ids = torch.full((len(items), width), pad, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        text_mask = torch.zeros((len(items), width), dtype=torch.bool)
        start = torch.zeros(len(items), dtype=torch.long)
        for row, item in enumerate(items):
            offset = width - len(item.input_ids) if self.padding_side == "left" else 0
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

    def autocast(self):
        return autocast(self.device, self.precision)

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

    def to_device(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """``batch``'s tensors on the model's device (a no-op where they already are)."""
        device = self.device
        return {key: value.to(device, non_blocking=True) for key, value in batch.items()}

    def forward(
        self,
        batch: dict[str, Tensor],
        plan: PoolingPlan | None = None,
        inputs_embeds: Float[Tensor, "batch seq hidden"] | None = None,
    ) -> TokenStates:
        """One forward of the backbone; keeps the hidden states and attention rows ``plan`` needs.

        ``plan`` defaults to the encoder's own pooling. ``inputs_embeds`` replaces the embedding lookup of
        ``batch["input_ids"]`` (integrated gradients differentiate with respect to them). Runs with whatever
        grad mode the caller set (training calls it with gradients on).
        """
        plan = plan if plan is not None else self.plan()
        batch = self.to_device(batch)
        wanted = list(plan.hidden_indices)
        only_last = wanted == [self.num_hidden_states - 1]
        query = batch["start"] + batch["length"] - 1
        capture = (
            capture_attention_rows(self.loaded.backbone, plan.attention_layers, query)
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
        with capture as rows, self.autocast(), backbone_hooks(self.method, self.loaded.backbone, batch):
            output = self.loaded.backbone(**model_inputs, output_hidden_states=not only_last)
        if only_last:
            hidden = {wanted[0]: output.last_hidden_state.float()}
        else:
            hidden = {i: output.hidden_states[i].float() for i in wanted}
        return TokenStates(
            num_hidden_states=self.num_hidden_states,
            hidden=hidden,
            start=batch["start"],
            length=batch["length"],
            eos_index=batch["eos_index"],
            text_mask=batch["text_mask"],
            attention_rows=dict(rows),
            pooled_start=batch.get("pooled_start"),
            pooled_length=batch.get("pooled_length"),
        )

    # ----- encoding
    def settings(self, prompt: Template | None, pooling: Pooling, use_adapter: bool) -> dict[str, object]:
        """Everything but the text that determines a vector: the embedding cache's key."""
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

    def encode_grid(
        self,
        texts: Sequence[str],
        combos: Sequence[tuple[PoolingMode, int | str]],
        *,
        prompt: str | PromptTemplate | None = None,
        use_adapter: bool | None = None,
        show_progress: bool = False,
    ) -> dict[tuple[str, str], Float[np.ndarray, "texts hidden"]]:
        """Vectors for every (pooling, layer) combination from one forward pass per batch.

        Returns ``{(pooling, str(layer)): float32 array (len(texts), dim)}``, not normalised.
        """
        use_adapter = self.use_adapter if use_adapter is None else use_adapter
        return self.encode_variants(texts, combos, (use_adapter,), prompt=prompt, show_progress=show_progress)[
            use_adapter
        ]

    def encode_grid_pair(
        self,
        texts: Sequence[str],
        combos: Sequence[tuple[PoolingMode, int | str]],
        *,
        prompt: str | PromptTemplate | None = None,
        show_progress: bool = False,
    ) -> tuple[dict[tuple[str, str], np.ndarray], dict[tuple[str, str], np.ndarray]]:
        """``encode_grid`` with the base weights and with the adapter, sharing the layers below the adapter."""
        both = self.encode_variants(texts, combos, (False, True), prompt=prompt, show_progress=show_progress)
        return both[False], both[True]

    def encode_pair(
        self,
        texts: Sequence[str],
        *,
        prompt: str | PromptTemplate | None = None,
        pooling: PoolingMode | None = None,
        layer: int | str | None = None,
        normalize: bool = False,
        show_progress: bool = False,
    ) -> tuple[Float[np.ndarray, "texts hidden"], Float[np.ndarray, "texts hidden"]]:
        """(base, adapter) vectors of ``texts``, equal to two ``encode`` calls but cheaper: the decoder
        layers below the adapter's lowest LoRA layer run once per batch (see ``forward_pair``)."""
        combo = (pooling or self.pooling, self.layer if layer is None else layer)
        base, tuned = self.encode_grid_pair(texts, [combo], prompt=prompt, show_progress=show_progress)
        pair = next(iter(base.values())), next(iter(tuned.values()))
        if normalize:
            pair = tuple(v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12) for v in pair)
        return pair  # type: ignore[return-value]

    def encode_variants(
        self,
        texts: Sequence[str],
        combos: Sequence[tuple[PoolingMode, int | str]],
        variants: Sequence[bool],
        *,
        prompt: str | PromptTemplate | None = None,
        show_progress: bool = False,
    ) -> dict[bool, dict[tuple[str, str], np.ndarray]]:
        """``{use_adapter: encode_grid result}`` for each of ``variants`` (base ``False``, adapter ``True``).

        Cached vectors are served from the cache; the rest run one forward per batch, or one shared-trunk
        pair forward when both variants are asked for.
        """
        texts = validate_texts(texts)
        variants = tuple(dict.fromkeys(variants))
        if True in variants and not self.loaded.has_adapter:
            raise ConfigError("No adapter is attached to this model; load one with adapter=PATH (or --adapter).")
        if isinstance(self.method, Ensemble):  # method hook point: one plain pass per prompt, averaged
            return self._encode_ensemble(texts, combos, prompt, variants, show_progress)
        template = self.template(prompt)
        plan = self.plan(combos)  # validates every mode and layer before any work
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
        truncated = sum(
            self._prepare_one(texts[i], template).truncated
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
            computed = self._compute([texts[i] for i in todo], template, plan, run_variants, show_progress)
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
        combos: Sequence[tuple[PoolingMode, int | str]],
        prompt: str | PromptTemplate | None,
        variants: tuple[bool, ...],
        show_progress: bool,
    ) -> dict[bool, dict[tuple[str, str], np.ndarray]]:
        method = self.method
        assert isinstance(method, Ensemble)
        method_template(method, prompt, prompt)  # an explicit prompt is an error: the method has them
        plain = copy.copy(self)  # shares the loaded model and the cache; each prompt's vectors cached as plain
        plain.method = method.plain  # carries the text normalisation
        grids: dict[bool, list[dict[tuple[str, str], np.ndarray]]] = {variant: [] for variant in variants}
        truncated = 0
        for template in method.templates():
            # Both variants of one prompt in one call, so a base+adapter pair shares the trunk per prompt.
            both = plain.encode_variants(texts, combos, variants, prompt=template, show_progress=show_progress)
            for variant in variants:
                grids[variant].append(both[variant])
            truncated = max(truncated, plain.last_truncated)
        self.last_truncated = truncated
        return {variant: method.average(grids[variant]) for variant in variants}

    def _compute(
        self,
        texts: list[str],
        template: Template,
        plan: PoolingPlan,
        variants: Sequence[bool],
        show_progress: bool,
    ) -> dict[bool, dict[tuple[str, str], np.ndarray]]:
        prepared = [self._prepare_one(text, template) for text in texts]
        self.last_truncated = sum(item.truncated for item in prepared)
        out = {
            variant: {(p.mode, str(p.layer)): np.zeros((len(texts), self.dim), dtype=np.float32) for p in plan.poolings}
            for variant in variants
        }
        groups = self.batches(prepared)
        total_tokens = sum(len(item.input_ids) for item in prepared)
        bar = tqdm(total=total_tokens, unit="tok", desc="embedding", disable=not show_progress, leave=False)
        with torch.inference_mode():
            for group in groups:
                states = self.forward_variants(self.collate([prepared[i] for i in group]), plan, variants)
                for variant, variant_states in states.items():
                    for pooling in plan.poolings:
                        out[variant][(pooling.mode, str(pooling.layer))][group] = pooling(variant_states).cpu().numpy()
                bar.update(sum(len(prepared[i].input_ids) for i in group))
        bar.close()
        return out

    # ----- base and adapter from one trunk

    def forward_variants(
        self, batch: dict[str, Tensor], plan: PoolingPlan, variants: Sequence[bool]
    ) -> dict[bool, TokenStates]:
        """Token states of ``batch`` per variant (base ``False``, adapter ``True``): one forward for one variant,
        the shared-trunk ``forward_pair`` for both."""
        variants = tuple(dict.fromkeys(variants))
        if len(variants) == 2:
            base, tuned = self.forward_pair(batch, plan)
            return {False: base, True: tuned}
        with self.loaded.adapter_enabled(variants[0]):
            return {variants[0]: self.forward(batch, plan)}

    def forward_pair(
        self, batch: dict[str, Tensor], plan: PoolingPlan | None = None
    ) -> tuple[TokenStates, TokenStates]:
        """(base, adapter) token states of ``batch``, running the layers the adapter leaves untouched once.

        The base forward runs whole, with pre-hooks recording what each upper decoder layer is called with
        (hidden states, mask, rotary embeddings, per-layer kwargs); the upper layers then run again from the
        same input with the adapter on, and the final norm. Equal to two separate forwards: the lower layers'
        weights and inputs are the same in both. Methods carry over: echo's pooled span is on the batch, and
        token prepending's pre-hooks wrap the upper rerun too (the recorded inputs precede its replacement).
        """
        plan = plan if plan is not None else self.plan()
        loaded = self.loaded
        shared = loaded.adapter_free_layers
        if shared == 0:  # the adapter touches the bottom layer or the embeddings: nothing to share
            with loaded.adapter_enabled(False):
                base = self.forward(batch, plan)
            with loaded.adapter_enabled(True):
                return base, self.forward(batch, plan)
        layers = loaded.backbone.layers
        count = loaded.num_layers
        calls: dict[int, tuple[tuple, dict]] = {}

        def recorder(index: int):
            def hook(_module, args: tuple, kwargs: dict) -> None:
                calls[index] = (args, kwargs)

            return hook

        handles = [layers[i].register_forward_pre_hook(recorder(i), with_kwargs=True) for i in range(shared, count)]
        try:
            with loaded.adapter_enabled(False):
                base = self.forward(batch, plan)
        finally:
            for handle in handles:
                handle.remove()
        wanted = set(plan.hidden_indices)
        hidden_states = {i: base.hidden[i] for i in wanted if i <= shared}
        upper_attention = [layer for layer in plan.attention_layers if layer >= shared]
        capture = (
            capture_attention_rows(loaded.backbone, upper_attention, base.start + base.length - 1)
            if upper_attention
            else nullcontext({})
        )
        args, kwargs = calls[shared]
        hidden = args[0] if args else kwargs["hidden_states"]
        device_batch = self.to_device(batch)
        with (
            loaded.adapter_enabled(True),
            capture as rows,
            self.autocast(),
            backbone_hooks(self.method, loaded.backbone, device_batch),
        ):
            for index in range(shared, count):
                args, kwargs = calls[index]
                if "past_key_values" in kwargs:  # the base pass's cache holds its keys: do not append to it
                    kwargs = {**kwargs, "past_key_values": None, "use_cache": False}
                if args:
                    output = layers[index](hidden, *args[1:], **kwargs)
                else:
                    output = layers[index](**{**kwargs, "hidden_states": hidden})
                hidden = output[0] if isinstance(output, tuple) else output
                if index + 1 in wanted and index + 1 < count:
                    hidden_states[index + 1] = hidden.float()
            if count in wanted:
                hidden_states[count] = loaded.backbone.norm(hidden).float()
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

    def encode(
        self,
        texts: Sequence[str],
        *,
        prompt: str | PromptTemplate | None = None,
        pooling: PoolingMode | None = None,
        layer: int | str | None = None,
        normalize: bool = False,
        use_adapter: bool | None = None,
        show_progress: bool = False,
    ) -> Float[np.ndarray, "texts hidden"]:
        """Embed texts: float32 array ``(len(texts), dim)``; L2-normalised if ``normalize``."""
        texts = validate_texts(texts)
        combo = (pooling or self.pooling, self.layer if layer is None else layer)
        vectors = next(
            iter(
                self.encode_grid(
                    texts, [combo], prompt=prompt, use_adapter=use_adapter, show_progress=show_progress
                ).values()
            )
        )
        if normalize:
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors
