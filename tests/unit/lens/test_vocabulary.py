"""The vocabulary lens against hand computations on the tiny Llama (tied and untied heads)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.lens.text import text_lens
from analysis.lens.vocabulary import (
    LensHead,
    NoLanguageModelHeadError,
    alignment_measures,
    content_token_ids,
    first_component,
    lens_head,
    project,
)
from core.encoding.roles import Role
from core.models.architecture import final_norm, lm_head

TEXT = "The quiet river flows under the old bridge."


@pytest.fixture(scope="module")
def tied_loaded(make_tiny_config, tiny_model_dir, tmp_path_factory):
    """The tiny Llama with its LM head tied to the token embedding."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    from core.models.registry import load_model

    folder = tmp_path_factory.mktemp("tiny-tied")
    torch.manual_seed(1)
    LlamaForCausalLM(make_tiny_config(tie_word_embeddings=True)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder)
    return load_model(str(folder))


def hand_logits(loaded, encoder, text: str) -> list[torch.Tensor]:
    """Logits of the last token's state at every hidden state: norm (not on the final one) then head, by hand."""
    item = encoder.prepare([text])[0]
    ids = torch.tensor([item.input_ids[: item.length]])
    with torch.inference_mode():
        out = loaded.backbone(input_ids=ids, output_hidden_states=True)
        norm, weight = loaded.backbone.norm, loaded.model.lm_head.weight
        states = [h[0, -1] for h in out.hidden_states]
        final = len(states) - 1
        return [(state if i == final else norm(state)) @ weight.T for i, state in enumerate(states)]


@pytest.mark.parametrize("tied", [False, True])
def test_lens_equals_norm_then_head_at_every_layer(tied, tiny_loaded, tied_loaded, tiny_encoder_factory):
    from core.encoding.encoder import Encoder

    loaded = tied_loaded if tied else tiny_loaded
    assert (loaded.model.lm_head.weight is loaded.model.model.embed_tokens.weight) == tied
    encoder = Encoder(loaded, prompt="eol", pooling="last", precision="fp32", cache=False)
    lens = text_lens(encoder, TEXT, top_k=5)
    expected = hand_logits(loaded, encoder, TEXT)
    assert len(lens.top["base"]) == len(expected) == loaded.num_layers + 1
    for layer, logits in enumerate(expected):
        probs = torch.softmax(logits, 0)
        top = torch.topk(probs, 5)
        got = lens.top["base"][layer]
        assert [t for t, _ in got] == [encoder.tokenizer.decode([int(i)]) for i in top.indices]
        np.testing.assert_allclose([p for _, p in got], top.values.numpy(), rtol=1e-4, atol=1e-6)


def test_final_layer_is_the_models_own_next_token_distribution(tiny_loaded, tiny_encoder_factory):
    """The final hidden state is already normed: the lens there equals the causal LM's logits (norm not twice)."""
    encoder = tiny_encoder_factory(prompt="eol", pooling="last")
    item = encoder.prepare([TEXT])[0]
    with torch.inference_mode():
        logits = tiny_loaded.model(input_ids=torch.tensor([item.input_ids[: item.length]])).logits[0, -1]
    lens = text_lens(encoder, TEXT, top_k=3)
    probs = torch.softmax(logits, 0)
    np.testing.assert_allclose([p for _, p in lens.top["base"][-1]], torch.topk(probs, 3).values, rtol=1e-4)


def test_architecture_finds_norm_and_head(tiny_loaded):
    assert final_norm(tiny_loaded.model) is tiny_loaded.model.model.norm
    assert final_norm(tiny_loaded.backbone) is tiny_loaded.backbone.norm
    assert lm_head(tiny_loaded.model) is tiny_loaded.model.lm_head
    assert lm_head(tiny_loaded.backbone) is None


def test_architecture_is_generic_over_families():
    from transformers import GPT2Config, GPT2LMHeadModel, OPTConfig, OPTForCausalLM

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=50))
    assert final_norm(gpt2) is gpt2.transformer.ln_f
    assert lm_head(gpt2) is gpt2.lm_head
    opt = OPTForCausalLM(
        OPTConfig(
            num_hidden_layers=2,
            hidden_size=16,
            ffn_dim=32,
            num_attention_heads=2,
            vocab_size=50,
            word_embed_proj_dim=16,
        )
    )
    assert final_norm(opt) is opt.model.decoder.final_layer_norm


def test_encoder_model_is_refused(tiny_bert_dir):
    from core.models.registry import load_model

    loaded = load_model(str(tiny_bert_dir))
    with pytest.raises(NoLanguageModelHeadError, match="no LM head"):
        lens_head(loaded)


def test_softcap_probabilities_follow_the_cap():
    torch.manual_seed(0)
    weight = torch.randn(40, 8)
    head = LensHead(norm=None, weight=weight, bias=None, softcap=3.0)
    z = torch.randn(5, 8)
    result = project(head, z, top_k=4)[0]
    capped = torch.tanh((z @ weight.T) / 3.0) * 3.0
    expected = torch.topk(torch.softmax(capped, 1), 4)
    np.testing.assert_array_equal(result.top_ids, expected.indices.numpy())
    np.testing.assert_allclose(result.top_probs, expected.values.numpy(), rtol=1e-5)
    with pytest.raises(ValueError):
        LensHead(norm=None, weight=weight, bias=None, softcap=-1.0)


def test_component_removal_equals_projecting_it_out_first():
    torch.manual_seed(0)
    weight = torch.randn(60, 8)
    head = LensHead(norm=None, weight=weight, bias=None, softcap=None)
    z = torch.randn(7, 8) + 3.0
    u = first_component(z.numpy())
    targets = [[1, 2, 3]] * 7
    raw, removed = project(head, z, top_k=5, targets=targets, removals=(None, u), chunk_rows=3)
    ut = torch.as_tensor(u, dtype=torch.float32)
    explicit = project(head, z - (z @ ut)[:, None] * ut[None, :], top_k=5, targets=targets)[0]
    np.testing.assert_array_equal(removed.top_ids, explicit.top_ids)
    np.testing.assert_array_equal(removed.target_ranks, explicit.target_ranks)
    direct = project(head, z, top_k=5, targets=targets)[0]
    np.testing.assert_array_equal(raw.target_ranks, direct.target_ranks)
    logits = z @ weight.T
    hand = [[int((logits[r] > logits[r, t]).sum()) for t in (1, 2, 3)] for r in range(7)]
    np.testing.assert_array_equal(direct.target_ranks, hand)


def test_alignment_counts_on_constructed_ranks():
    ranks = np.array([[0, 4, 12, -1], [20, 30, -1, -1], [-1, -1, -1, -1], [9, 10, 3, 2]])
    measures = alignment_measures(ranks, top_k=10)
    np.testing.assert_array_equal(measures["hits"][[0, 1, 3]], [2, 0, 3])
    np.testing.assert_allclose(measures["hit_rate"][[0, 1, 3]], [2 / 3, 0.0, 0.75])
    np.testing.assert_array_equal(measures["any_hit"][[0, 1, 3]], [1, 0, 1])
    np.testing.assert_array_equal(measures["best_rank"][[0, 1, 3]], [0, 20, 2])
    assert all(np.isnan(measures[name][2]) for name in measures)  # a text without content tokens


def test_content_token_ids_are_the_texts_content_words(tiny_encoder_factory):
    encoder = tiny_encoder_factory(prompt="eol", pooling="last")
    item = encoder.prepare(["The river flows under the bridge."])[0]
    ids = content_token_ids([item])[0]
    expected = [t for t, r in zip(item.input_ids, item.roles, strict=False) if r == Role.CONTENT]
    assert ids == list(dict.fromkeys(expected)) and ids
    prompt_ids = {t for t, r in zip(item.input_ids, item.roles, strict=False) if r == Role.PROMPT}
    assert not set(ids) <= prompt_ids


def test_text_lens_with_adapter_reports_difference(tiny_model_dir, tiny_adapter_dir):
    from core.encoding.encoder import Encoder

    encoder = Encoder(str(tiny_model_dir), str(tiny_adapter_dir), prompt="eol", pooling="last",
                      precision="fp32", cache=False)  # fmt: skip
    lens = text_lens(encoder, TEXT, top_k=4)
    assert set(lens.top) == {"base", "adapter"}
    assert len(lens.changes) == len(lens.layers)
    rises = lens.changes[-1]["rises"]
    assert rises[0][1] >= rises[-1][1] > -1
    # The adapter (q/v LoRA in every layer) changes the final distribution.
    assert lens.top["base"][-1] != lens.top["adapter"][-1]
    # Below the first adapted layer nothing changes: the embeddings' lens is identical.
    assert lens.top["base"][0] == lens.top["adapter"][0]


def test_capped_ranks_equal_exact_ranks_below_the_cap():
    torch.manual_seed(2)
    head = LensHead(norm=None, weight=torch.randn(300, 8), bias=None, softcap=None)
    z = torch.randn(12, 8)
    targets = [list(range(r, r + 40, 3)) for r in range(12)]
    exact = project(head, z, top_k=5, targets=targets)[0].target_ranks
    capped = project(head, z, top_k=5, targets=targets, rank_cap=20, chunk_rows=5)[0].target_ranks
    np.testing.assert_array_equal(capped, np.where(exact >= 0, np.minimum(exact, 20), -1))
