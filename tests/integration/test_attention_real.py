"""Attention capture and attribution on the real SmolLM2 with a small random LoRA (no trained adapter needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.integration

TEXTS = [
    "a man is driving a car",
    "What is the capital of France?",
    "How many legs does a spider have?",
    "Who wrote the novel War and Peace?",
]


@pytest.fixture(scope="module")
def smollm_dir() -> str:
    from core.models.registry import ModelNotFoundError, resolve_model_path

    try:
        return resolve_model_path("smollm2-135m")
    except ModelNotFoundError as error:
        pytest.skip(str(error))


@pytest.fixture(scope="module")
def adapter_dir(smollm_dir, tmp_path_factory) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(smollm_dir, attn_implementation="eager")
    # Random A and B at scale 0.5: vectors move (cosine ~0.99 to base) but stay sane.
    config = LoraConfig(
        r=8, lora_alpha=4, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], init_lora_weights=False
    )
    out = tmp_path_factory.mktemp("random-lora")
    get_peft_model(model, config).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def encoder(adapter_dir):
    from core.encoding.encoder import Encoder

    return Encoder("smollm2-135m", adapter=adapter_dir, prompt="cluster", pooling="last", cache=False, precision="fp32")


def test_capture_keeps_vectors_and_the_first_token_is_the_sink(encoder):
    from analysis.attention import capture_corpus, role_shares
    from analysis.categories import CATEGORIES

    base = capture_corpus(encoder, TEXTS, use_adapter=False)
    full = capture_corpus(encoder, TEXTS, use_adapter=False, mode="full")
    np.testing.assert_allclose(base.embeddings, encoder.encode(TEXTS, use_adapter=False), atol=1e-4)
    for row_item, full_item in zip(base.items, full.items, strict=True):
        np.testing.assert_allclose(row_item.rows, full_item.rows, atol=1e-6)
    assert base.items[0].tokens[0] == "This"  # SmolLM2 adds no BOS
    shares = role_shares(base).mean((0, 2))  # (layers, categories)
    assert shares.shape == (30, len(CATEGORIES))
    # Past the first layers the first token takes the largest share: it is the sink without a BOS.
    assert np.median(shares[2:, CATEGORIES.index("sink")]) > 0.3


def test_attribution_converges_on_the_real_model(encoder):
    from analysis.attribution.integrated_gradients import Attributor

    attributor = Attributor(encoder)
    shares = attributor.token_shares(TEXTS[0], use_adapter=True)
    assert shares.relative_delta < 0.05
    similarity = attributor.similarity(TEXTS[1], TEXTS[3], use_adapter=False)
    assert similarity.a.relative_delta < 0.05 and similarity.b.relative_delta < 0.05


def test_cli_smoke(adapter_dir, tmp_path):
    from analysis.attention.report import main

    out = tmp_path / "report"
    argv = ["--adapter", str(adapter_dir), "--task", "trec-fine", "--n", "24", "--out", str(out)]
    argv += ["--bench-n", "8", "--attribution-n", "1", "--bootstrap", "500"]
    assert main(argv) == 0
    report = json.loads((out / "attention_report.json").read_text())
    assert report["settings"]["layers"] == 30 and report["settings"]["heads"] == 9
    assert np.array(report["shift"]["per_layer_head_focus"]["mean"]).shape == (30, 9)
    assert report["examples"][0]["tokens"][0] == "This"
    for label in ("base", "adapter"):
        assert max(s["relative_delta"] for s in report["attribution"][label]["token_shares"]) < 0.05
