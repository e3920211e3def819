"""Base and adapter vectors for the side-by-side pages: one shared-trunk pass, equal to two separate passes."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.sides import embed_sides
from tests.conftest import TINY_LAYERS

TEXTS = [f"text number {i} about {'cats' if i % 2 else 'markets'}" for i in range(7)]


@pytest.fixture(scope="module")
def top_layer_encoder(tiny_model_dir, tmp_path_factory):
    """The tiny model with a LoRA adapter on its top layer only: the layers below are shared by both sides."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from core.encoding.encoder import Encoder

    torch.manual_seed(5)
    folder = tmp_path_factory.mktemp("top-adapter")
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], layers_to_transform=[TINY_LAYERS - 1],
        init_lora_weights=False,
    )  # fmt: skip
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), config).save_pretrained(folder)
    return Encoder(str(tiny_model_dir), folder, precision="fp32", cache=False, prompt="eol", pooling="last")


def test_base_only_without_an_adapter_in_chunks_with_progress(tiny_encoder):
    calls: list[tuple[int, int]] = []
    vectors = embed_sides(tiny_encoder, TEXTS, lambda done, total: calls.append((done, total)), chunk=3)
    assert list(vectors) == ["base"]
    assert calls == [(0, 7), (3, 7), (6, 7), (7, 7)]
    np.testing.assert_allclose(vectors["base"], tiny_encoder.encode(TEXTS), atol=1e-5)
    with pytest.raises(ValueError, match="chunk"):
        embed_sides(tiny_encoder, TEXTS, lambda *_: None, chunk=0)
    assert embed_sides(tiny_encoder, [])["base"].shape == (0, tiny_encoder.dim)


@pytest.mark.parametrize("chunk", [3, 64])
def test_base_and_adapter_share_the_trunk_and_equal_two_passes(top_layer_encoder, forward_counter, chunk):
    encoder = top_layer_encoder
    layers = encoder.loaded.backbone.layers
    calls: list[tuple[int, int]] = []
    with forward_counter(layers[0]) as bottom, forward_counter(layers[-1]) as top:
        vectors = embed_sides(encoder, TEXTS, lambda *done: calls.append(done), chunk=chunk, pooling="mean", layer=-1)
    assert list(vectors) == ["base", "adapter"] and calls[-1] == (7, 7)
    assert top.calls == 2 * bottom.calls  # the layers below the adapter ran once for both sides
    for side, use_adapter in (("base", False), ("adapter", True)):
        alone = encoder.encode(TEXTS, pooling="mean", layer=-1, use_adapter=use_adapter)
        np.testing.assert_allclose(vectors[side], alone, atol=1e-5, rtol=0)
    assert np.abs(vectors["adapter"] - vectors["base"]).max() > 1e-3
