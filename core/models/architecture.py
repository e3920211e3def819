"""Architecture discovery: where a decoder LM keeps its layers, attention, final norm, LM head and linear layers.

Found from the model's structure in general, so any transformers decoder works without a per-family adapter:

- the decoder layers are the ``nn.ModuleList`` of ``config.num_hidden_layers`` modules inside the backbone
  (``model.layers`` for Llama, ``transformer.h`` for GPT-2 and Falcon, ``gpt_neox.layers``, ``model.decoder.layers``);
- a layer's attention is its child whose class name ends in ``Attention`` (``self_attn``, ``attn``, ``attention``,
  ``self_attention``);
- the final norm is the last norm beside the layer list (``norm``, ``ln_f``, ``final_layer_norm``);
- the LM head is ``get_output_embeddings()``;
- linear layers are ``nn.Linear`` and transformers' ``Conv1D`` (GPT-2's transposed linear).

:data:`ATTENTION_NAMES` is the short table of exceptions: child names tried where no class name says
``Attention``. Every function accepts the causal LM or its backbone (:func:`backbone_of`: what ``AutoModel`` loads).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from core.runtime.errors import ConfigError

__all__ = [
    "ATTENTION_NAMES",
    "ArchitectureError",
    "attention_module",
    "attention_modules",
    "backbone_of",
    "decoder_layers",
    "default_lora_targets",
    "final_norm",
    "is_linear",
    "layer_list_name",
    "linear_layers",
    "lm_head",
]

# Child names of a decoder layer that hold its self-attention, for classes not named "...Attention".
ATTENTION_NAMES: tuple[str, ...] = ("self_attn", "self_attention", "attention", "attn")
# Class-name fragments of normalisation layers (LayerNorm, RMSNorm, GemmaRMSNorm, OlmoLayerNorm, ...).
_NORM_MARKERS: tuple[str, ...] = ("norm",)


class ArchitectureError(ConfigError):
    """The model lacks a part a feature needs (its decoder layers, an attention module); the message names it."""


def backbone_of(model: nn.Module) -> nn.Module:
    """The transformer without its LM head, as ``AutoModel`` loads it: the causal LM's ``base_model``
    (``LlamaModel``, ``GPT2Model``, ``OPTModel``); a base model is its own backbone (so this is idempotent).
    A module that is no transformers model falls back to ``get_decoder()``, else itself."""
    base = getattr(model, "base_model", None)
    if isinstance(base, nn.Module):
        return base
    get_decoder = getattr(model, "get_decoder", None)
    if callable(get_decoder):
        try:
            decoder = get_decoder()
        except (AttributeError, NotImplementedError, TypeError):
            decoder = None
        if isinstance(decoder, nn.Module):
            return decoder
    return model


def _layer_count(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    count = getattr(config, "num_hidden_layers", None)
    return int(count) if isinstance(count, int) else None


def layer_list_name(model: nn.Module) -> str:
    """The decoder layers' ``nn.ModuleList`` as a module name inside ``model`` (``layers``, ``h``,
    ``model.layers``, ``transformer.h``): what peft's ``layers_pattern`` and hook names use.

    Raises:
        ArchitectureError: no ``nn.ModuleList`` of ``config.num_hidden_layers`` modules (or, without a config,
            no module list at all) is found.
    """
    count = _layer_count(model)
    backbone = backbone_of(model)
    prefix = next((name for name, module in model.named_modules() if module is backbone), "")
    candidates = [
        name
        for name, module in backbone.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) > 0 and (count is None or len(module) == count)
    ]
    if not candidates:
        raise ArchitectureError(
            f"{type(model).__name__} has no list of {count if count is not None else 'its'} decoder layers "
            "(an nn.ModuleList of num_hidden_layers modules); attention capture, token prepending, the shared "
            "trunk and LoRA on chosen layers need one."
        )
    # The shallowest list wins: a layer's own sub-lists (experts) sit deeper.
    name = min(candidates, key=lambda item: item.count("."))
    return f"{prefix}.{name}" if prefix else name


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layers in order (the causal LM or its backbone)."""
    layers = model.get_submodule(layer_list_name(model))
    assert isinstance(layers, nn.ModuleList)
    return layers


def attention_module(layer: nn.Module) -> nn.Module:
    """A decoder layer's self-attention: the direct child whose class name ends in ``Attention``, else the first
    child named in :data:`ATTENTION_NAMES`.

    Raises:
        ArchitectureError: the layer has neither.
    """
    named = [child for child in layer.children() if type(child).__name__.lower().endswith("attention")]
    if len(named) == 1:
        return named[0]
    for name in ATTENTION_NAMES:
        child = getattr(layer, name, None)
        if isinstance(child, nn.Module):
            return child
    raise ArchitectureError(
        f"{type(layer).__name__} has no self-attention module (a child class named '...Attention' or one of "
        f"{', '.join(ATTENTION_NAMES)}); attention capture and attention pooling need it."
    )


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """Each decoder layer's self-attention module, in layer order."""
    return [attention_module(layer) for layer in decoder_layers(model)]


def _is_norm(module: nn.Module) -> bool:
    name = type(module).__name__.lower()
    return any(marker in name for marker in _NORM_MARKERS)


def final_norm(model: nn.Module) -> nn.Module | None:
    """The norm applied after the last decoder layer (``norm``, ``ln_f``, ``final_layer_norm``): the last norm among
    the children of the module holding the layer list, or ``None`` where it has none (OPT-350m's post-norm layout)."""
    name = layer_list_name(model)
    parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    layers = model.get_submodule(name)
    norms = [child for child in parent.children() if child is not layers and _is_norm(child)]
    return norms[-1] if norms else None


def lm_head(model: nn.Module) -> nn.Module | None:
    """The causal LM's output projection to the vocabulary, or ``None`` (a backbone or an encoder has none)."""
    get_output = getattr(model, "get_output_embeddings", None)
    head = get_output() if callable(get_output) else None
    return head if isinstance(head, nn.Module) else None


def is_linear(module: nn.Module) -> bool:
    """``nn.Linear`` or transformers' ``Conv1D`` (GPT-2's linear with transposed weights), the layers LoRA wraps."""
    if isinstance(module, nn.Linear):
        return True
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf") and hasattr(module, "weight")


def linear_layers(model: nn.Module, layer_indices: Sequence[int] | None = None) -> dict[str, nn.Module]:
    """The linear layers of the chosen decoder layers (every layer when ``None``), by module name in ``model``.

    Negative indices count from the end; out-of-range ones raise :class:`ArchitectureError`.
    """
    layers_name = layer_list_name(model)
    layers = model.get_submodule(layers_name)
    count = len(layers)
    indices = range(count) if layer_indices is None else layer_indices
    found: dict[str, nn.Module] = {}
    for index in indices:
        if not -count <= index < count:
            raise ArchitectureError(f"Decoder layer {index} is out of range: this model has {count} (0..{count - 1}).")
        prefix = f"{layers_name}.{index % count}"
        for name, module in layers[index % count].named_modules():
            if name and is_linear(module):
                found[f"{prefix}.{name}"] = module
    return found


def default_lora_targets(model: nn.Module, layer_indices: Sequence[int]) -> list[str]:
    """peft's ``all-linear`` on chosen layers: every linear layer (``nn.Linear``, ``Conv1D``) of the decoder
    layers ``layer_indices``, as full module names in the backbone (``layers.3.self_attn.q_proj``, ``h.0.attn.c_attn``).

    peft matches a target to a module whose name equals it or ends in ``.`` + it, so backbone names fit both the
    backbone and the causal LM around it (``model.layers.3.self_attn.q_proj``). The LM head is never among them (it
    is outside the decoder layers); neither are a mixture-of-experts layer's fused expert weights (no linear module).

    Raises:
        ArchitectureError: no decoder layers, an index out of range, or no linear layer in the chosen layers.
    """
    targets = sorted(linear_layers(backbone_of(model), layer_indices), key=_natural_key)
    if not targets:
        raise ArchitectureError(
            f"{type(model).__name__} has no linear layers (nn.Linear or Conv1D) in decoder layers "
            f"{list(layer_indices)}; name LoRA target modules by hand."
        )
    return targets


def _natural_key(name: str) -> tuple:
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in name.split("."))
