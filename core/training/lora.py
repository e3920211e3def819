"""LoRA on the decoder backbone: which modules and layers it adapts, and attaching it."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from core.models.architecture import default_lora_targets, is_linear
from core.models.registry import layers_name
from core.runtime.errors import TrainError
from core.training.config import PAPER_TARGETS, TrainConfig

__all__ = ["ALL_LINEAR", "attach_lora", "linear_module_names", "lora_targets"]

ALL_LINEAR = "all-linear"


def linear_module_names(model: nn.Module) -> list[str]:
    """The distinct last names of the model's linear modules (``q_proj``, ``up_proj``...), sorted."""
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules() if is_linear(module)})


def lora_targets(backbone: nn.Module, names: Sequence[str], lora_layers: int) -> tuple[list[str], list[int] | None]:
    """The modules and layers LoRA adapts: the one place targets are resolved.

    The default names (the paper's q, v, o, gate, up, down projections) are used where the model has them all;
    on any other architecture (GPT-2's ``c_attn``, Phi-3's fused ``qkv_proj``, Pythia's ``query_key_value``), and
    whenever ``names`` is ``("all-linear",)``, every linear layer of the chosen decoder layers is adapted
    (:func:`core.models.architecture.default_lora_targets`, the LM head never among them).

    Args:
        backbone: the decoder without its LM head.
        names: module names; short paper names (q, v, gate...) map to ``q_proj``...; or ``all-linear``.
        lora_layers: the top k decoder layers (0 = every layer).

    Returns:
        The module names (short, or full names that already pick their layers), and the layer indices for short
        names (None = every layer, or the full names' own).

    Raises:
        TrainError: a name the model lacks (naming the linear modules it has), or more layers than it has.
    """
    n_layers = backbone.config.num_hidden_layers
    if lora_layers > n_layers:
        raise TrainError(
            f"lora_layers {lora_layers} exceeds the model's {n_layers} layers; use 1..{n_layers} (0 = all)"
        )
    layers = list(range(n_layers - lora_layers, n_layers)) if lora_layers else None
    available = linear_module_names(backbone)
    default_elsewhere = tuple(names) == PAPER_TARGETS and not set(PAPER_TARGETS) <= set(available)
    if tuple(names) == (ALL_LINEAR,) or default_elsewhere:
        return default_lora_targets(backbone, layers if layers is not None else range(n_layers)), None
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
            f"target module(s) {', '.join(missing)} not in the model; its linear modules are: {', '.join(available)} "
            f"(or use {ALL_LINEAR} for every linear layer of the adapted layers)"
        )
    return resolved, layers


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
