"""The shared trunk of base and adapter: record the adapted layers' inputs during the base forward, then rerun only
those layers with the adapter on. Both the full forward (:mod:`core.encoding.forward`) and the prefix-reusing one
(:mod:`core.encoding.prefix`) run base and adapter this way, so the layers below the adapter run once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import Tensor

from core.models.architecture import decoder_layers, final_norm
from core.models.registry import LoadedModel

__all__ = ["LayerCalls", "recording_adapted_layer_calls", "rerun_adapted_layers"]

LayerCalls = dict[int, tuple[tuple, dict]]


@contextmanager
def recording_adapted_layer_calls(loaded: LoadedModel) -> Iterator[LayerCalls]:
    """During the block, record each adapted decoder layer's call ``(args, kwargs)`` by layer index.

    The adapted layers are ``loaded.adapter_free_layers`` up to the last; the recorded inputs of the lowest one are
    the hidden states the adapter rerun starts from. The hooks are removed when the block ends, however it ends.
    """
    layers = decoder_layers(loaded.backbone)
    calls: LayerCalls = {}

    def recorder(index: int):
        def hook(_module, args: tuple, kwargs: dict) -> None:
            calls[index] = (args, kwargs)

        return hook

    handles = [
        layers[i].register_forward_pre_hook(recorder(i), with_kwargs=True)
        for i in range(loaded.adapter_free_layers, loaded.num_layers)
    ]
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()


def rerun_adapted_layers(
    loaded: LoadedModel, calls: LayerCalls, wanted: set[int], *, past_key_values: Any = None
) -> dict[int, Tensor]:
    """Run the adapted layers again on their recorded inputs (the caller turns the adapter on, sets autocast and any
    method hooks): the float32 hidden states for the indices in ``wanted`` above ``loaded.adapter_free_layers``, the
    last one through the final norm, as ``output_hidden_states`` gives them.

    Args:
        loaded: the model whose base forward filled ``calls`` (:func:`recording_adapted_layer_calls`).
        calls: the recorded calls of every adapted layer.
        wanted: hidden-state indices (0 = embeddings, ``num_layers`` = final, normed).
        past_key_values: a key/value cache the rerun writes into (prefix reuse); ``None`` runs without one, and a
            cache the base pass recorded is dropped so the base's keys are never appended to.
    """
    shared, count = loaded.adapter_free_layers, loaded.num_layers
    layers = decoder_layers(loaded.backbone)
    args, kwargs = calls[shared]
    hidden = args[0] if args else kwargs["hidden_states"]
    states: dict[int, Tensor] = {}
    for index in range(shared, count):
        args, kwargs = calls[index]
        if past_key_values is not None:
            kwargs = {**kwargs, "past_key_values": past_key_values}
        elif "past_key_values" in kwargs:
            kwargs = {**kwargs, "past_key_values": None, "use_cache": False}
        if args:
            output = layers[index](hidden, *args[1:], **kwargs)
        else:
            output = layers[index](**{**kwargs, "hidden_states": hidden})
        hidden = output[0] if isinstance(output, tuple) else output
        if index + 1 in wanted and index + 1 < count:
            states[index + 1] = hidden.float()
    if count in wanted:
        norm = final_norm(loaded.backbone)
        states[count] = (norm(hidden) if norm is not None else hidden).float()
    return states
