"""Helpers of the training tests: settings for the tiny Llama, and comparing adapters' weights."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from core.training.config import TrainConfig

WORDS = [
    "the",
    "a",
    "man",
    "woman",
    "dog",
    "cat",
    "car",
    "drives",
    "runs",
    "eats",
    "quickly",
    "slowly",
    "red",
    "blue",
    "house",
    "street",
    "city",
    "in",
    "on",
    "at",
    "with",
    "is",
    "are",
    "was",
    "were",
    "this",
    "that",
    "sentence",
    "means",
    "one",
    "word",
    "belongs",
    "to",
    "following",
    "cluster",
]


def make_config(tiny_dir: Path, pair_file: Path, **overrides) -> TrainConfig:
    """A few cheap steps on the tiny model; ``overrides`` in the flat form (``prompt=...`` too)."""
    settings = dict(
        pairs=str(pair_file),
        base_model=str(tiny_dir),
        lora_r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        lora_layers=0,  # the tiny model has fewer layers than the recipe's 8
        steps=4,
        warmup_steps=1,
        batch_size=8,
        micro_batch_size=0,
        lr=1e-2,
        temperature=0.2,
        max_length=64,
        checkpoint_every=0,
        progress=False,
        precision="fp32",  # the equality tests need it; "auto" would pick bf16 on a CPU with bf16 units
    )
    settings.update(overrides)
    return TrainConfig.from_dict(settings)


def lora_weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "adapter_model.safetensors"))


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)
