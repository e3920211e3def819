"""An ``Encoder`` as an mteb model: ``mteb.evaluate(MtebEncoder(encoder), task, cache=None)``.

A thin wrapper beside the mteb tasks, as mteb's own model integrations are, so that core loads no mteb.
mteb's calls are served under one :class:`~core.encoding.setting.EmbeddingSetting`: the encoder's own (an adapter's
trained one, or the recipe's), or the one given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ModelMeta

from core.encoding.encoder import Encoder
from core.encoding.setting import EmbeddingSetting


class MtebEncoder(AbsEncoder):
    """mteb's encoder protocol over an Encoder: DataLoader of ``{"text": [...]}`` batches in, float32 vectors out."""

    def __init__(self, encoder: Encoder, setting: EmbeddingSetting | None = None):
        """Args:
        encoder: the encoder (its loaded model is shared, not copied).
        setting: the setting mteb's texts are embedded under; None: the encoder's.
        """
        encoder = encoder.with_setting(setting) if setting is not None else encoder
        self.encoder = encoder
        self.model = encoder
        self.setting = encoder.setting
        self.mteb_model_meta = ModelMeta.create_empty(
            overwrites={
                "name": f"embedding-lens/{Path(encoder.loaded.name).name}",
                "revision": encoder.loaded.weights_hash[:12],
                "embed_dim": encoder.dim,
                "max_tokens": encoder.max_length,
                "similarity_fn_name": "cosine",
                "framework": ["PyTorch"],
            }
        )

    def encode(
        self,
        inputs: Any,
        *,
        task_metadata: Any,
        hf_split: str,
        hf_subset: str,
        prompt_type: Any = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """The encoder's vectors for every text of mteb's batches; ``batch_size`` and other mteb keywords are
        ignored, since batches follow the encoder's token budget."""
        texts: list[str] = []
        for batch in inputs:
            texts.extend(batch["text"])
        return self.encoder.encode(texts)
