"""The encoder: texts -> prompt-wrapped tokens -> one forward -> pooled vectors.

Speed comes from running the transformer without its LM head, batching texts sorted by length
under a token budget (little padding), and bf16 autocast where the CPU has bf16 units. A text's
vector does not depend on its batch: position ids come from the attention mask, and pooled
positions are explicit, so padding side and batch-mates do not matter.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from core.cache import EmbeddingCache, settings_key
from core.capture import capture_attention_rows
from core.errors import ConfigError
from core.methods import (
    PLAIN,
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
from core.models import DEFAULT_MODEL, LoadedModel, load_model
from core.pooling import (
    ENCODER_POOLING_MODES,
    POOLING_MODES,
    LayerChoice,
    Pooling,
    PoolingMode,
    TokenStates,
)
from core.prompts import PLACEHOLDER, PromptTemplate
from core.roles import TEXT_ROLES, Role, token_roles

Precision = Literal["auto", "fp32", "bf16"]
PaddingSide = Literal["right", "left"]
# Bump when a change alters vectors for the same settings, so stale cache entries are not served.
ENGINE_VERSION = 1


@cache
def cpu_has_bf16() -> bool:
    """True where the CPU has AMX bf16 tiles, the units that make bf16 faster than fp32.

    AVX-512 BF16 alone is not enough: on such a 2-core Xeon, core.bench measured bf16 matmul at half
    the fp32 rate (0.16 vs 0.32 TFLOP/s) and the engine at 488 vs 878 tokens/s.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags


def resolve_precision(precision: Precision) -> Literal["fp32", "bf16"]:
    if precision not in ("auto", "fp32", "bf16"):
        raise ConfigError(f"Unknown precision {precision!r}; choose auto, fp32 or bf16.")
    if precision == "auto":
        return "bf16" if cpu_has_bf16() else "fp32"
    return precision


@dataclass(frozen=True)
class PreparedText:
    """A text wrapped in its prompt and tokenized, with each token's role."""

    input_ids: tuple[int, ...]  # the tokenizer's encoding, plus an appended EOS where ``eos_index >= 0``
    roles: tuple[Role, ...]
    length: int  # tokens of the wrapped text, appended EOS excluded
    eos_index: int
    wrapped: str
    truncated: bool
    # Method hook points (core.methods): the pooled token range [start, end), the TP placeholder's position.
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


def validate_texts(texts: Sequence[Any]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("encode() takes a list of texts, not a single string: wrap it as [text].")
    texts = list(texts)
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"Text {index} is a {type(text).__name__}, not a string: {text!r:.80}")
        if not text.strip():
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
    ):
        method = parse_method(method)
        if prompt is not None:
            method_template(method, prompt, prompt)  # fail before the slow model load
        if pooling is not None and pooling not in POOLING_MODES:
            raise ConfigError(f"Unknown pooling {pooling!r}; choose one of: {', '.join(POOLING_MODES)}.")
        if isinstance(model, LoadedModel) and adapter is not None:
            raise ConfigError("Pass the adapter to load_model() when passing a LoadedModel.")
        self.loaded = model if isinstance(model, LoadedModel) else load_model(model, adapter)
        # An adapter records the prompt, pooling, layer and max length it was trained with: they are the
        # defaults, so inference matches training unless the caller overrides them.
        trained = self.loaded.adapter_metadata
        max_length = max_length if max_length is not None else int(trained.get("max_length", 512))
        self._configure(
            method=method,
            prompt=prompt,
            default_prompt=trained.get("prompt", "none"),
            pooling=pooling if pooling is not None else trained.get("pooling", "mean"),
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
        self.precision = resolve_precision(precision)
        if max_length < 4:
            raise ConfigError(f"max_length={max_length} is too small; use at least 4 tokens.")
        self.max_length = max_length
        if padding_side not in ("right", "left"):
            raise ConfigError(f"Unknown padding side {padding_side!r}; choose right or left.")
        self.batch_tokens = batch_tokens
        self.max_batch_size = max_batch_size
        self.padding_side = padding_side

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
        if allow_empty:
            if isinstance(texts, str) or not all(isinstance(text, str) for text in texts):
                raise TypeError("prepare() takes a list of strings.")
            return [self._prepare_one(text, template) for text in texts]
        return [self._prepare_one(text, template) for text in validate_texts(texts)]

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
            # Method hook points (core.methods): the pooled span, absolute; the TP placeholder's position.
            "pooled_start": start + pooled[:, 0],
            "pooled_length": pooled[:, 1] - pooled[:, 0],
            "placeholder": start + torch.tensor([item.placeholder_index for item in items]),
        }

    def autocast(self):
        if self.precision == "bf16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return nullcontext()

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
        wanted = list(plan.hidden_indices)
        only_last = wanted == [self.num_hidden_states - 1]
        query = batch["start"] + batch["length"] - 1
        capture = (
            capture_attention_rows(self.loaded.backbone, plan.attention_layers, query)
            if plan.attention_layers
            else nullcontext({})
        )
        model_inputs = {key: batch[key] for key in ("attention_mask", "position_ids")}
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
        texts = validate_texts(texts)
        if isinstance(self.method, Ensemble):  # method hook point: one plain pass per prompt, averaged
            return self._encode_ensemble(texts, combos, prompt, use_adapter, show_progress)
        template = self.template(prompt)
        use_adapter = self.use_adapter if use_adapter is None else use_adapter
        plan = self.plan(combos)  # validates every mode and layer before any work
        poolings = plan.poolings
        results = {(p.mode, str(p.layer)): np.zeros((len(texts), self.dim), dtype=np.float32) for p in poolings}
        keys = {(p.mode, str(p.layer)): settings_key(self.settings(template, p, use_adapter)) for p in poolings}
        missing: set[int] = set(range(len(texts)))
        if self.cache is not None and texts:
            missing = set()
            for combo, key in keys.items():
                found = self.cache.get_many(key, texts)
                for index, vector in found.items():
                    results[combo][index] = vector
                missing.update(set(range(len(texts))) - set(found))
        # Cached texts were truncated too if they are long: count them by tokenizing alone (cheap), skipping
        # texts too short to reach max_length (a token covers at least one byte; 8 spare for special tokens).
        truncated = sum(
            self._prepare_one(texts[i], template).truncated
            for i in set(range(len(texts))) - missing
            if len(template.wrap(texts[i]).string.encode()) + 8 > self.max_length
        )
        if missing:
            todo = sorted(missing)
            computed = self._compute([texts[i] for i in todo], template, plan, use_adapter, show_progress)
            truncated += self.last_truncated
            for combo, vectors in computed.items():
                results[combo][todo] = vectors
                if self.cache is not None:
                    self.cache.put_many(keys[combo], [texts[i] for i in todo], vectors)
        self.last_truncated = truncated
        if truncated:
            warnings.warn(
                f"{truncated} of {len(texts)} texts exceeded max_length={self.max_length} tokens and "
                "were truncated before wrapping.",
                stacklevel=3,
            )
        return results

    def _encode_ensemble(
        self,
        texts: list[str],
        combos: Sequence[tuple[PoolingMode, int | str]],
        prompt: str | PromptTemplate | None,
        use_adapter: bool | None,
        show_progress: bool,
    ) -> dict[tuple[str, str], np.ndarray]:
        method = self.method
        assert isinstance(method, Ensemble)
        method_template(method, prompt, prompt)  # an explicit prompt is an error: the method has them
        plain = copy.copy(self)  # shares the loaded model and the cache; each prompt's vectors cached as plain
        plain.method = PLAIN
        grids, truncated = [], 0
        for template in method.templates():
            grids.append(
                plain.encode_grid(texts, combos, prompt=template, use_adapter=use_adapter, show_progress=show_progress)
            )
            truncated = max(truncated, plain.last_truncated)
        self.last_truncated = truncated
        return method.average(grids)

    def _compute(
        self,
        texts: list[str],
        template: Template,
        plan: PoolingPlan,
        use_adapter: bool,
        show_progress: bool,
    ) -> dict[tuple[str, str], np.ndarray]:
        prepared = [self._prepare_one(text, template) for text in texts]
        self.last_truncated = sum(item.truncated for item in prepared)
        out = {(p.mode, str(p.layer)): np.zeros((len(texts), self.dim), dtype=np.float32) for p in plan.poolings}
        groups = self.batches(prepared)
        total_tokens = sum(len(item.input_ids) for item in prepared)
        bar = tqdm(total=total_tokens, unit="tok", desc="embedding", disable=not show_progress, leave=False)
        with torch.inference_mode(), self.loaded.adapter_enabled(use_adapter):
            for group in groups:
                batch = self.collate([prepared[i] for i in group])
                states = self.forward(batch, plan)
                for pooling in plan.poolings:
                    out[(pooling.mode, str(pooling.layer))][group] = pooling(states).numpy()
                bar.update(sum(len(prepared[i].input_ids) for i in group))
        bar.close()
        return out

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
