"""Embedding Lens core: decoder LMs as text embedders, with or without a LoRA adapter.

Public names (imported lazily, so ``import core.runtime`` stays light):

- :class:`Encoder`: embeds texts with a model (and adapter) in a prompt, pooling and layer.
- :func:`load_model`: a packaged name, local folder or hub id as a :class:`LoadedModel`, adapter attached.
- :class:`TrainConfig`, :class:`Trainer`: contrastive LoRA training (``python -m core.train``).
- :func:`export`: an adapter or model as a sentence-transformers folder (``python -m core.export``).

Subpackages, each owning one concept (their ``__init__`` docstrings say what they may import):
``runtime`` (errors, files, paths, devices), ``models``, ``data``, ``encoding``, ``pairs``, ``training``,
``export``. Top-level modules are the commands: ``embed``, ``train``, ``bench``, and ``metrics`` (the scorer).
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "Encoder": "core.encoding.encoder",
    "LoadedModel": "core.models.registry",
    "load_model": "core.models.registry",
    "TrainConfig": "core.training.config",
    "Trainer": "core.training.trainer",
    "export": "core.export.folder",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'core' has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name]), name)
