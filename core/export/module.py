"""Embedding Lens's encoder as a sentence-transformers module, shipped inside an exported folder.

``python -m core.export`` copies this file verbatim into the folder as ``embedding_lens_module.py``;
``SentenceTransformer(folder, trust_remote_code=True)`` then imports it from there. It therefore
imports nothing from this repository: it repeats the workbench's input construction (the prompt
template wrapped around a text cut at a token boundary first, so the template's end survives; one
EOS appended on a causal model) and its pooling modes, so vectors match ``core.encoding.encoder.Encoder``.
It tokenizes the text itself: no chat template is ever applied.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, ClassVar

import torch
from sentence_transformers.base.modules import InputModule
from transformers import AutoModel, AutoTokenizer

FORMAT_VERSION = 1
METHODS = ("plain",)  # the input methods this module implements; a config naming another is refused
POOLINGS = ("mean", "last", "eos", "weighted", "text_mean")
PLACEHOLDER = "{text}"
MODULE_FILE = "embedding_lens_module.py"


def layer_indices(layer: str, num_hidden_states: int) -> list[int]:
    """Non-negative indices into ``hidden_states``: one index (``-1`` = final output) or ``lastK``."""
    text = str(layer).strip().lower()
    if text.startswith("last"):
        k = int(text[4:].lstrip("-"))
        if not 1 <= k <= num_hidden_states - 1:
            raise ValueError(f"Layer {layer!r} asks for more layers than the model has ({num_hidden_states - 1}).")
        return list(range(num_hidden_states - k, num_hidden_states))
    index = int(text)
    if not -num_hidden_states <= index < num_hidden_states:
        raise ValueError(f"Layer {index} is out of range for {num_hidden_states - 1} layers.")
    return [index % num_hidden_states]


class LensEmbedder(InputModule):
    """Prompt template -> tokens (+ EOS) -> one forward -> pooled vector, as the workbench does it."""

    config_file_name = "embedding_lens_config.json"
    config_keys: ClassVar[list[str]] = [
        "format_version",
        "method",
        "template",
        "pooling",
        "layer",
        "max_length",
        "append_eos",
        "adapter_subfolder",
        "dtype",
    ]

    def __init__(
        self,
        model_dir: str,
        *,
        format_version: int = FORMAT_VERSION,
        method: str = "plain",
        template: str = PLACEHOLDER,
        pooling: str = "mean",
        layer: str = "-1",
        max_length: int = 512,
        append_eos: bool = True,
        adapter_subfolder: str | None = None,
        dtype: str = "float32",
    ) -> None:
        super().__init__()
        if format_version > FORMAT_VERSION:
            raise ValueError(f"This folder needs a newer {MODULE_FILE} (format {format_version} > {FORMAT_VERSION}).")
        if method not in METHODS:
            raise ValueError(f"Unknown method {method!r}; this module implements: {', '.join(METHODS)}.")
        if pooling not in POOLINGS:
            raise ValueError(f"Unknown pooling {pooling!r}; this module implements: {', '.join(POOLINGS)}.")
        if template.count(PLACEHOLDER) != 1:
            raise ValueError(f"The template {template!r} must contain {PLACEHOLDER} exactly once.")
        self.model_dir = str(model_dir)
        self.format_version = format_version
        self.method = method
        self.template = template
        self.pooling = pooling
        self.layer = str(layer)
        self.max_length = int(max_length)
        self.append_eos = bool(append_eos)
        self.adapter_subfolder = adapter_subfolder
        self.dtype = dtype
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        # Eager attention, as the workbench runs; the vectors then agree to float rounding.
        model = AutoModel.from_pretrained(self.model_dir, dtype=getattr(torch, dtype), attn_implementation="eager")
        if adapter_subfolder:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(Path(self.model_dir) / adapter_subfolder))
        model.eval()
        self.auto_model = model
        self.num_hidden_states = int(model.config.num_hidden_layers) + 1
        self.indices = layer_indices(self.layer, self.num_hidden_states)

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", **kwargs: Any) -> LensEmbedder:
        loading = {k: kwargs[k] for k in ("token", "cache_folder", "revision", "local_files_only") if k in kwargs}
        folder = cls.load_dir_path(model_name_or_path, subfolder=subfolder, **loading)
        config = cls.load_config(model_name_or_path, subfolder=subfolder, **loading)
        return cls(folder, **config)

    def get_embedding_dimension(self) -> int:
        return int(self.auto_model.config.hidden_size)

    # ----- input construction (mirrors core.encoding.encoder.Encoder._prepare_one)
    def _prepare_one(self, text: str) -> tuple[list[int], int, int, list[bool]]:
        prefix, suffix = self.template.split(PLACEHOLDER, 1)
        tokenizer = self.tokenizer
        eos = tokenizer.eos_token_id if self.append_eos else None
        keep: int | None = None
        while True:
            wrapped = prefix + text + suffix
            encoding = tokenizer(
                wrapped, return_offsets_mapping=True, return_special_tokens_mask=True, add_special_tokens=True
            )
            ids = list(encoding["input_ids"])
            appended = eos is not None and (not ids or ids[-1] != eos)
            total = len(ids) + int(appended)
            if total <= self.max_length:
                break
            offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
            keep = len(offsets) - (total - self.max_length) if keep is None else keep - 1
            if keep < 1:
                raise ValueError(f"The template leaves no room for text within max_length={self.max_length} tokens.")
            text = text[: offsets[keep - 1][1]]
        start, end = len(prefix), len(prefix) + len(text)
        text_mask = [
            not special and a != b and a < end and b > start
            for (a, b), special in zip(encoding["offset_mapping"], encoding["special_tokens_mask"], strict=True)
        ]
        if appended:
            ids.append(eos)
            text_mask.append(False)
            return ids, len(ids) - 1, len(ids) - 1, text_mask
        return ids, len(ids), (len(ids) - 1 if eos is not None else -1), text_mask

    def preprocess(self, inputs: list[str], prompt: str | None = None, **kwargs: Any) -> dict[str, torch.Tensor]:
        # A sentence-transformers prompt (prompt_name=/prompt=) goes before the text, inside the template.
        items = [self._prepare_one((prompt or "") + text) for text in inputs]
        width = max(len(ids) for ids, *_ in items)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((len(items), width), pad, dtype=torch.long)
        attention_mask = torch.zeros((len(items), width), dtype=torch.long)
        text_mask = torch.zeros((len(items), width), dtype=torch.bool)
        for row, (ids, _length, _eos, mask) in enumerate(items):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention_mask[row, : len(ids)] = 1
            text_mask[row, : len(mask)] = torch.tensor(mask)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "lens_length": torch.tensor([length for _ids, length, _eos, _mask in items]),
            "lens_eos_index": torch.tensor([eos for _ids, _length, eos, _mask in items]),
            "lens_text_mask": text_mask,
        }

    # ----- forward and pooling (mirrors core.encoding.pooling.pool)
    def forward(self, features: dict[str, torch.Tensor], **kwargs: Any) -> dict[str, torch.Tensor]:
        mask = features["attention_mask"]
        only_last = self.indices == [self.num_hidden_states - 1]
        output = self.auto_model(
            input_ids=features["input_ids"],
            attention_mask=mask,
            position_ids=(mask.cumsum(1) - 1).clamp_min(0),
            output_hidden_states=not only_last,
        )
        if only_last:
            hidden = output.last_hidden_state.float()
        else:
            hidden = torch.stack([output.hidden_states[i].float() for i in self.indices]).mean(0)
        features["token_embeddings"] = hidden
        features["sentence_embedding"] = self._pool(hidden, features)
        return features

    def _pool(self, hidden: torch.Tensor, features: dict[str, torch.Tensor]) -> torch.Tensor:
        length, eos_index = features["lens_length"], features["lens_eos_index"]
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        positions = torch.arange(hidden.shape[1], device=hidden.device)
        sequence = positions[None, :] < length[:, None]
        if self.pooling == "last":
            return hidden[rows, length - 1]
        if self.pooling == "eos":
            if bool((eos_index < 0).any()):
                raise ValueError("EOS pooling needs an EOS token, and this tokenizer defines none.")
            return hidden[rows, eos_index]
        if self.pooling == "mean":
            weights = sequence.to(hidden.dtype)
        elif self.pooling == "text_mean":
            weights = features["lens_text_mask"].to(hidden.dtype)
        else:  # weighted: the i-th token (1-based) weighs i, as in SGPT
            weights = (positions[None, :] + 1).to(hidden.dtype) * sequence
        weights = weights / weights.sum(dim=1, keepdim=True).clamp_min(torch.finfo(hidden.dtype).tiny)
        return torch.einsum("bs,bsh->bh", weights, hidden)

    # ----- saving (weights do not change at inference: saving again copies the folder it came from)
    def save(self, output_path: str, *args: Any, **kwargs: Any) -> None:
        out = Path(output_path)
        if out.resolve() != Path(self.model_dir).resolve():
            shutil.copytree(self.model_dir, out, dirs_exist_ok=True)
        (out / self.config_file_name).write_text(json.dumps(self.get_config_dict(), indent=2))
