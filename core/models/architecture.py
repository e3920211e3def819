"""Architecture discovery for decoder families: where the final norm and the LM head are.

Found from the module structure, so a family needs no entry in a table: the final norm is the normalisation
module that the decoder's stack applies after its last layer (a direct child of the module that holds the
layer list), and the LM head is what ``get_output_embeddings()`` returns (tied or untied alike).
"""

from __future__ import annotations

from torch import nn

__all__ = ["final_norm", "lm_head"]

# Attribute names that known families give their final norm, tried first (in this order) on the module that
# holds the decoder layers; the structural search below covers families not listed.
_NORM_NAMES = ("norm", "ln_f", "final_layer_norm", "final_layernorm", "norm_f", "ln_final")


def _is_norm(module: nn.Module) -> bool:
    name = type(module).__name__.lower()
    return isinstance(module, (nn.LayerNorm, nn.GroupNorm)) or "norm" in name


def _layer_list_owner(model: nn.Module) -> nn.Module | None:
    """The module whose child is the decoder's layer list (the longest ``nn.ModuleList`` of the model)."""
    best: tuple[int, nn.Module] | None = None
    for module in model.modules():
        for child in module.children():
            if isinstance(child, nn.ModuleList) and len(child) > 0 and (best is None or len(child) > best[0]):
                best = (len(child), module)
    return best[1] if best is not None else None


def final_norm(model: nn.Module) -> nn.Module | None:
    """The norm applied after the last decoder layer, or None where the model has none.

    Args:
        model: a causal LM (``...ForCausalLM``), its backbone, or a peft wrapper of either.

    Returns:
        ``model.model.norm`` (Llama, Qwen, Gemma, Mistral), ``transformer.ln_f`` (GPT-2, Falcon),
        ``gpt_neox.final_layer_norm`` (GPT-NeoX), ``model.decoder.final_layer_norm`` (OPT): the normalisation
        module that is a direct child of the module holding the decoder layer list. None if that module has no
        such child (a model without a final norm).
    """
    owner = _layer_list_owner(model)
    if owner is None:
        return None
    for name in _NORM_NAMES:
        child = getattr(owner, name, None)
        if isinstance(child, nn.Module) and _is_norm(child):
            return child
    # Structure alone: the last norm child registered on the stack (embedding norms come first, final norms last).
    norms = [child for child in owner.children() if not isinstance(child, nn.ModuleList) and _is_norm(child)]
    return norms[-1] if norms else None


def lm_head(model: nn.Module) -> nn.Module | None:
    """The output projection to the vocabulary (``get_output_embeddings()``), tied or untied; None without one
    (an encoder such as MiniLM, or a backbone without its head)."""
    getter = getattr(model, "get_output_embeddings", None)
    head = getter() if callable(getter) else None
    return head if isinstance(head, nn.Module) else None
