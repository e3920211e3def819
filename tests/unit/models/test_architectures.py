"""The architecture matrix: every common decoder family, built tiny from its config, through every feature.

Each family is a random 2-layer model from ``AutoConfig.for_model`` with the tiny Llama's tokenizer, saved to a
folder and loaded as a user's model would be. Discovery (``core.models.architecture``), every method and pooling,
the attention view and attribution run for all; training with resume, the shared base+adapter trunk and export
to a sentence-transformers folder are marked slow.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from core.encoding.encoder import Encoder
from core.encoding.pooling import POOLING_MODES
from core.models.architecture import (
    ArchitectureError,
    attention_modules,
    backbone_of,
    decoder_layers,
    default_lora_targets,
    final_norm,
    is_linear,
    lm_head,
)
from core.models.registry import load_model

HIDDEN, LAYERS, HEADS = 32, 2, 4
_COMMON = dict(hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS, max_position_embeddings=256)
_GATED = dict(_COMMON, intermediate_size=64, num_key_value_heads=2)
# model_type -> config values beyond the vocabulary and the special tokens.
FAMILIES: dict[str, dict[str, Any]] = {
    "llama": _GATED,
    "qwen2": _GATED,
    "qwen3": dict(_GATED, head_dim=8),
    "mistral": dict(_GATED, head_dim=8),
    "gemma2": dict(_GATED, head_dim=8),
    "gemma3_text": dict(_GATED, head_dim=8),
    "phi3": _GATED,
    "olmo2": _GATED,
    "gpt2": dict(n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, n_positions=256),
    "gpt_neox": dict(_COMMON, intermediate_size=64),
    "opt": dict(_COMMON, ffn_dim=64, word_embed_proj_dim=HIDDEN),
    "falcon": dict(hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS),
    "qwen2_moe": dict(
        _GATED, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16, shared_expert_intermediate_size=32
    ),
}
TEXTS = ["The red dog runs quickly in the garden.", "A cat sleeps.", "An old man walks from the market."]


def build_family(model_type: str, folder: Path, tokenizer) -> Path:
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(
        model_type,
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **FAMILIES[model_type],
    )
    config.architectures = [AutoModelForCausalLM._model_mapping[type(config)].__name__]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def family_dirs(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    root = tmp_path_factory.mktemp("families")
    return {name: build_family(name, root / name, tokenizer) for name in FAMILIES}


_LOADED: dict[str, Any] = {}


@pytest.fixture(params=list(FAMILIES))
def family(request, family_dirs) -> tuple[str, Any]:
    """(model_type, LoadedModel), loaded once per session."""
    name = request.param
    if name not in _LOADED:
        _LOADED[name] = load_model(str(family_dirs[name]), device="cpu")
    return name, _LOADED[name]


def encoder_for(loaded, **settings: Any) -> Encoder:
    return Encoder(loaded, precision="fp32", cache=False, **settings)


# ----- discovery


def test_discovery_finds_layers_attention_norm_head_and_linears(family):
    _, loaded = family
    model = loaded.model
    layers = decoder_layers(model)
    assert len(layers) == LAYERS and decoder_layers(loaded.backbone) is layers
    assert backbone_of(model) is loaded.backbone and backbone_of(loaded.backbone) is loaded.backbone
    attentions = attention_modules(loaded.backbone)
    assert len(attentions) == LAYERS
    for layer, attention in zip(layers, attentions, strict=True):
        assert any(child is attention for child in layer.children())
    norm = final_norm(model)
    assert norm is not None and not any(norm is module for module in layers.modules())
    assert lm_head(model) is model.get_output_embeddings() and lm_head(loaded.backbone) is None

    targets = default_lora_targets(model, [LAYERS - 1])
    assert default_lora_targets(loaded.backbone, [LAYERS - 1]) == targets
    modules = dict(loaded.backbone.named_modules())
    assert targets and all(is_linear(modules[target]) for target in targets)
    assert not any(modules[target] is lm_head(model) for target in targets)
    top = next(key for key, module in modules.items() if module is layers[LAYERS - 1])
    assert all(target.startswith(top + ".") for target in targets)
    # Every linear of that layer, nothing else: the same count as the layer's own linear modules.
    assert len(targets) == sum(is_linear(module) for module in layers[LAYERS - 1].modules())


def test_default_targets_name_modules_peft_wraps_on_the_backbone(family):
    """Backbone names: peft's suffix match finds them from the backbone and from the causal LM."""
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import LoraLayer

    _, loaded = family
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(loaded.path, dtype=torch.float32)
    targets = default_lora_targets(model, [0, LAYERS - 1])
    for target_model in (backbone_of(model), model):  # the causal LM holds the same modules
        peft_model = get_peft_model(target_model, LoraConfig(r=2, target_modules=targets))
        wrapped = [key for key, module in peft_model.named_modules() if isinstance(module, LoraLayer)]
        assert len(wrapped) == len(targets)
        peft_model.unload()


def test_out_of_range_layers_and_models_without_layers_are_named(tiny_loaded):
    with pytest.raises(ArchitectureError, match="out of range"):
        default_lora_targets(tiny_loaded.model, [99])
    with pytest.raises(ArchitectureError, match="no list of its decoder layers"):
        decoder_layers(nn.Sequential(nn.Linear(2, 2)))


@pytest.mark.parametrize(
    ("name", "reason"), [("gemma2", "does not support SDPA"), ("falcon", "cannot switch attention kernels")]
)
def test_families_without_switchable_sdpa_load_eager_and_say_so(family_dirs, caplog, name, reason):
    with caplog.at_level(logging.INFO, logger="core.models.registry"):
        loaded = load_model(str(family_dirs[name]), device="cpu")
    assert loaded.model.config._attn_implementation == "eager"
    assert [record for record in caplog.records if reason in record.getMessage()]


# ----- embedding: every method and pooling


@pytest.mark.parametrize("method", ["plain", "echo", "tp", "ensemble:eol+summarize"])
def test_every_method_embeds(family, method):
    _, loaded = family
    vectors = encoder_for(loaded, method=method).encode(TEXTS)
    assert vectors.shape == (len(TEXTS), loaded.hidden_size)
    assert np.isfinite(vectors).all() and not np.allclose(vectors[0], vectors[1])


def test_token_prepending_changes_the_vector(family):
    """The hooks reach the family's decoder layers: an empty TP range gives other vectors than tp:1-2."""
    _, loaded = family
    hooked = encoder_for(loaded, method=f"tp:1-{LAYERS}").encode(TEXTS[:1])
    plain = encoder_for(loaded, method="tp:1-1").encode(TEXTS[:1])
    assert not np.allclose(hooked, plain)


def test_every_pooling_embeds(family):
    _, loaded = family
    encoder = encoder_for(loaded)
    combos = [(mode, -1) for mode in POOLING_MODES]
    grid = encoder.encode_grid(TEXTS, combos)[False]
    assert set(grid) == {(mode, "-1") for mode in POOLING_MODES}
    for vectors in grid.values():
        assert vectors.shape == (len(TEXTS), loaded.hidden_size) and np.isfinite(vectors).all()
    assert not np.allclose(grid[("mean", "-1")], grid[("last", "-1")])


# ----- analysis: the attention view and attribution


def test_attention_view(family):
    from analysis.attention import attention_view

    _, loaded = family
    view = attention_view(encoder_for(loaded), TEXTS[0])
    matrix = view.matrices["base"]
    assert matrix.shape == (LAYERS, len(view.tokens))
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-4)  # each layer's query row is a distribution


def test_attribution_is_complete(family):
    from analysis.attribution.integrated_gradients import Attributor

    _, loaded = family
    attribution = Attributor(encoder_for(loaded), n_steps=8, max_steps=64).token_shares(TEXTS[1], use_adapter=False)
    assert np.isfinite(attribution.shares).all() and len(attribution.shares) > 0
    assert attribution.relative_delta < 0.25


# ----- training, resume, the shared trunk and export (slow)


def _pair_file(folder: Path) -> Path:
    import json
    import random

    rng = random.Random(0)
    words = ["the", "red", "blue", "dog", "cat", "man", "woman", "runs", "walks", "sees", "house", "river", "book"]
    lines = []
    for index in range(24):
        anchor = [rng.choice(words) for _ in range(rng.randint(3, 9))]
        positive = [*anchor[1:], anchor[0], "too"]
        row = {"anchor": " ".join(anchor), "positive": " ".join(positive), "source": "t", "id": index}
        lines.append(json.dumps(row))
    path = folder / "pairs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.slow
def test_training_resumes_and_the_adapter_serves_trunk_and_export(family, tmp_path):
    """Trained with the default targets: the paper's projections where a family has them, else every linear layer."""
    from core.bench.check import train_config
    from core.export.folder import export
    from core.training.trainer import Trainer

    _, loaded = family
    targets = default_lora_targets(loaded.backbone, [LAYERS - 1])
    settings = dict(
        pairs=str(_pair_file(tmp_path)), base_model=loaded.path, lora_r=2, lora_alpha=4, lora_dropout=0.0,
        lora_layers=1, steps=3, warmup_steps=1, batch_size=4, micro_batch_size=0,
        lr=1e-2, max_length=32, checkpoint_every=1, progress=False, precision="fp32", prompt="eol",
    )  # fmt: skip
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    Trainer(train_config(**settings), straight).train()

    def interrupt(result):
        if result.step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Trainer(train_config(**settings), resumed).train(callback=interrupt)
    trainer = Trainer(train_config(**settings), resumed, resume=True)
    assert trainer.step == 2
    trainer.train()
    from safetensors.torch import load_file

    first, second = (load_file(str(folder / "adapter_model.safetensors")) for folder in (straight, resumed))
    adapted = {key.removeprefix("base_model.model.").split(".lora_")[0] for key in first}
    assert first.keys() == second.keys() and adapted and adapted <= set(targets)
    assert all(torch.equal(first[key], second[key]) for key in first)

    # The shared trunk: base and adapter from one pass over the untouched bottom layer equal two passes.
    encoder = Encoder(loaded.path, str(straight), precision="fp32", cache=False, device="cpu")
    assert encoder.loaded.adapter_free_layers == LAYERS - 1
    grids = encoder.encode_grid(TEXTS, variants=(False, True))
    base, tuned = (next(iter(grids[variant].values())) for variant in (False, True))
    np.testing.assert_allclose(base, encoder.encode(TEXTS, use_adapter=False), atol=1e-5)
    np.testing.assert_allclose(tuned, encoder.encode(TEXTS, use_adapter=True), atol=1e-5)
    assert not np.allclose(base, tuned)

    report = export(str(straight), tmp_path / "exported")
    assert report.min_cosine > 0.9999


# ----- an adapter names its base model


def test_model_for_takes_the_adapters_base_model(tiny_model_dir, tiny_adapter_dir, tmp_path):
    from core.models.registry import DEFAULT_MODEL, model_for
    from core.runtime.errors import AdapterError

    assert model_for(None, tiny_adapter_dir) == str(tiny_model_dir)
    assert model_for("other", tiny_adapter_dir) == "other"
    assert model_for(None, None) == DEFAULT_MODEL
    with pytest.raises(AdapterError, match="No adapter folder"):
        model_for(None, tmp_path / "missing")


@pytest.mark.slow
def test_embed_cli_with_an_adapter_and_no_model_uses_its_base(tiny_model_dir, tiny_adapter_dir, tmp_path):
    from core.embed import main

    source, output = tmp_path / "texts.txt", tmp_path / "vectors.npy"
    source.write_text("\n".join(TEXTS) + "\n")
    argv = ["--adapter", str(tiny_adapter_dir), "--input", str(source), "--output", str(output)]
    assert main([*argv, "--no-cache", "--device", "cpu", "--precision", "fp32"]) == 0
    expected = Encoder(str(tiny_model_dir), str(tiny_adapter_dir), precision="fp32", cache=False).encode(TEXTS)
    np.testing.assert_allclose(np.load(output), expected, atol=1e-5)
