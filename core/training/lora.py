"""LoRA on the decoder backbone: which modules and layers it adapts, and attaching it."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from core.models.registry import layers_name
from core.runtime.errors import TrainError
from core.training.config import TrainConfig

__all__ = ["attach_lora", "linear_module_names", "lora_targets"]


def linear_module_names(model: nn.Module) -> list[str]:
    """The distinct last names of the model's linear modules (``q_proj``, ``up_proj``...), sorted."""
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, nn.Linear)})


def lora_targets(backbone: nn.Module, names: Sequence[str], lora_layers: int) -> tuple[list[str], list[int] | None]:
    """The modules and layers LoRA adapts: the one place targets are resolved.

    Args:
        backbone: the decoder without its LM head.
        names: module names; short paper names (q, v, gate...) map to ``q_proj``...
        lora_layers: the top k decoder layers (0 = every layer).

    Returns:
        The module names found in the model, and the layer indices (None = every layer).

    Raises:
        TrainError: a name the model lacks (naming the linear modules it has), or more layers than it has.
    """
    available = linear_module_names(backbone)
    resolved, missing = [], []
    for name in names:
        if name in available:
            resolved.append(name)
        elif f"{name}_proj" in available:
            resolved.append(f"{name}_proj")
        else:
            missing.append(name)
    if missing:
        raise TrainError(
            f"target module(s) {', '.join(missing)} not in the model; its linear modules are: {', '.join(available)}"
        )
    n_layers = backbone.config.num_hidden_layers
    if lora_layers > n_layers:
        raise TrainError(
            f"lora_layers {lora_layers} exceeds the model's {n_layers} layers; use 1..{n_layers} (0 = all)"
        )
    return resolved, list(range(n_layers - lora_layers, n_layers)) if lora_layers else None


def attach_lora(backbone: nn.Module, config: TrainConfig, rank: int) -> Any:
    """``backbone`` wrapped in a peft model with fresh LoRA weights (seeded: the same init on every process).

    On the backbone (what embedding runs, no LM head): the saved adapter then loads with plain peft on
    ``AutoModel.from_pretrained(base)``, and its layer choice names the layer list (``layers_pattern``), which
    peft needs to find layer numbers there. Leaves the torch RNG seeded per process, for different dropout noise.
    """
    from peft import LoraConfig, get_peft_model

    targets, layers = lora_targets(backbone, config.target_modules, config.lora_layers)
    torch.manual_seed(config.seed)
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets,
        layers_to_transform=layers,
        layers_pattern=layers_name(backbone) if layers else None,
        bias="none",
    )
    with warnings.catch_warnings():  # peft probes a deprecated transformers attribute: noise, nothing to act on
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        model = get_peft_model(backbone, lora)
    torch.manual_seed(config.seed + 1 + rank)
    return model
