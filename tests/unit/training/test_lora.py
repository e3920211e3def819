"""LoRA targets: names checked against the model (short paper names accepted), layers counted from the top."""

from __future__ import annotations

import pytest

from core.runtime.errors import TrainError
from core.training.lora import linear_module_names, lora_targets
from tests.conftest import TINY_LAYERS


def test_targets_resolve_short_names_and_the_top_layers(tiny_loaded):
    backbone = tiny_loaded.backbone
    assert {"q_proj", "v_proj", "down_proj"} <= set(linear_module_names(backbone))
    names, layers = lora_targets(backbone, ["q", "v_proj", "gate"], 1)
    assert names == ["q_proj", "v_proj", "gate_proj"] and layers == [TINY_LAYERS - 1]
    assert lora_targets(backbone, ["q"], 0)[1] is None  # every layer
    assert lora_targets(backbone, ["q"], TINY_LAYERS)[1] == list(range(TINY_LAYERS))


def test_targets_the_model_lacks_are_named_with_what_it_has(tiny_loaded):
    with pytest.raises(TrainError, match=r"target module\(s\) qkv not in the model; its linear modules are: .*o_proj"):
        lora_targets(tiny_loaded.backbone, ["q", "qkv"], 0)
    with pytest.raises(TrainError, match=f"lora_layers {TINY_LAYERS + 1} exceeds the model's {TINY_LAYERS} layers"):
        lora_targets(tiny_loaded.backbone, ["q"], TINY_LAYERS + 1)
