"""Prefix reuse gives the vectors of full forwards, for every pooling, layer, method, padding side and the shared
base+adapter trunk; it runs fewer tokens where texts share a prefix, and none of it where it is not exact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from core.encoding.prefix import batch_prefix, reference_states, reuse_blocker, row_tokens, token_passes
from tests.conftest import TINY_LAYERS

# Every pooling that reads token states, at the last layer, a middle one, the embeddings and a layer mean.
COMBOS = [(mode, layer) for mode in ("mean", "last", "eos", "weighted", "text_mean") for layer in (-1, 1, 0, "last2")]
ATOL = 1e-5  # fp32 rounding: the attention sums run over the same keys in another order


def grids_both_ways(encoder, texts, combos=COMBOS, variants=None):
    """(with reuse, without reuse, token-passes with, token-passes without) of one encode_grid."""
    counter = token_passes(encoder.loaded)
    before = counter.snapshot()
    on = encoder.encode_grid(texts, combos, variants=variants)
    passes_on = counter.since(before)
    before = counter.snapshot()
    off = encoder.with_setting(prefix_reuse=False).encode_grid(texts, combos, variants=variants)
    return on, off, passes_on, counter.since(before)


def assert_same(on: dict, off: dict) -> None:
    assert on.keys() == off.keys()
    for variant in on:
        assert on[variant].keys() == off[variant].keys()
        for combo in on[variant]:
            np.testing.assert_allclose(on[variant][combo], off[variant][combo], atol=ATOL, rtol=0, err_msg=str(combo))


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize(
    "method,prompt",
    [("plain", "eol"), ("plain", "cluster"), ("echo", None), ("tp:1-3", None), ("tp:0-1", None), ("metaeol", None),
     ("ensemble:eol+summarize", None)],
)  # fmt: skip
def test_reuse_equals_full_forwards(tiny_encoder_factory, sample_texts, method, prompt, padding_side):
    settings = {"method": method, "padding_side": padding_side, **({"prompt": prompt} if prompt else {})}
    encoder = tiny_encoder_factory(**settings)
    on, off, passes_on, passes_off = grids_both_ways(encoder, sample_texts)
    assert_same(on, off)
    assert passes_on < passes_off  # every template here opens with a shared prefix


def test_reuse_is_exact_on_the_shared_trunk(tiny_model_dir, tmp_path_factory, sample_texts):
    """Base and adapter from one trunk (an adapter on the top layer only, and one on every layer), with reuse."""
    from core.encoding.encoder import Encoder
    from tests.unit.encoding.test_encoder_pair import _adapter

    for layers in ([TINY_LAYERS - 1], None):
        folder = _adapter(tiny_model_dir, tmp_path_factory.mktemp("adapter"), layers)
        for method in ("plain", "tp:1-3"):
            prompt = {"prompt": "eol"} if method == "plain" else {}
            encoder = Encoder(str(tiny_model_dir), folder, precision="fp32", cache=False, method=method, **prompt)
            on, off, passes_on, passes_off = grids_both_ways(encoder, sample_texts, variants=(False, True))
            assert_same(on, off)
            assert passes_on < passes_off


def test_perturbed_texts_reuse_their_originals(tiny_encoder_factory, sample_texts):
    """Each text against a reference it shares a prefix with: the rows run only their suffixes, same vectors."""
    encoder = tiny_encoder_factory(prompt="eol", pooling="mean")
    originals = sample_texts[:3]
    shortened = [text[: len(text) // 2] + text[len(text) // 2 + 3 :] for text in originals]
    texts = [*shortened, originals[1], "An unrelated text."]
    of = [0, 1, 2, 1, 0]
    plan = encoder.plan()
    references = encoder.references(encoder.prepare(originals), plan, [False])
    items = encoder.prepare(texts)
    batch = encoder.collate(items)
    counter = token_passes(encoder.loaded)
    with torch.inference_mode():
        before = counter.snapshot()
        reused = encoder.forward_variants(batch, plan, [False], references=(references, of))[False]
        run = counter.since(before)
        full = encoder.with_setting(prefix_reuse=False).forward_variants(batch, plan, [False])[False]
    np.testing.assert_allclose(plan.poolings[0](reused), plan.poolings[0](full), atol=ATOL, rtol=0)
    # Each row runs exactly what follows its common prefix with its original.
    pairs = zip(items, of, strict=True)
    expected = sum(len(item.input_ids) - references.reuse(item.input_ids, ref) for item, ref in pairs)
    assert run == expected < sum(len(item.input_ids) for item in items)
    assert references.reuse(items[4].input_ids, 0) < references.reuse(items[0].input_ids, 0)  # the template only
    # Each row runs at least one token: the original itself reuses all but its last.
    assert references.reuse(items[3].input_ids, 1) == len(items[3].input_ids) - 1


def test_token_prepending_reuses_nothing_from_its_placeholder_on(tiny_encoder_factory, sample_texts):
    encoder = tiny_encoder_factory(method="tp:1-3")
    batch = encoder.collate(encoder.prepare(sample_texts))
    shared = batch_prefix(encoder.method, batch)
    placeholder = int((batch["placeholder"] - batch["start"]).min())
    assert 0 < shared <= placeholder
    plain = tiny_encoder_factory(prompt=encoder.prompt.template.replace("<PST>", "_"))
    plain_batch = plain.collate(plain.prepare(sample_texts))
    assert batch_prefix(plain.method, plain_batch) > shared  # without the rule it would reach past the placeholder


def test_reuse_stays_out_where_it_is_not_exact(tiny_encoder_factory, tiny_loaded, tiny_bert_dir, sample_texts):
    from core.encoding.capture import capture_attention
    from core.models.registry import load_model

    encoder = tiny_encoder_factory(prompt="eol")
    assert reuse_blocker(tiny_loaded, [], None) is None or torch.is_grad_enabled()
    with torch.inference_mode():
        assert reuse_blocker(tiny_loaded, [], None) is None
        assert "attention" in reuse_blocker(tiny_loaded, [1], None)
        assert "inputs_embeds" in reuse_blocker(tiny_loaded, [], torch.zeros(1, 1, 1))
        with capture_attention(tiny_loaded.backbone, None, "rows", torch.tensor([0])):
            assert "hooks" in reuse_blocker(tiny_loaded, [], None)
        assert "bidirectional" in reuse_blocker(load_model(str(tiny_bert_dir)), [], None)
    with torch.enable_grad():
        assert "gradients" in reuse_blocker(tiny_loaded, [], None)
    # Attention pooling captures rows: the same tokens run with reuse on as off.
    on, off, passes_on, passes_off = grids_both_ways(encoder, sample_texts, [("attention", -1)])
    assert_same(on, off)
    assert passes_on == passes_off


def test_token_passes_count_the_tokens_run(tiny_encoder_factory, sample_texts):
    encoder = tiny_encoder_factory(prompt="eol", prefix_reuse=False)
    counter = encoder.token_passes
    before = counter.snapshot()
    encoder.encode(sample_texts)
    assert counter.since(before) == sum(len(item.input_ids) for item in encoder.prepare(sample_texts))


def test_reference_states_keep_the_states_of_a_full_forward(tiny_encoder_factory, sample_texts):
    encoder = tiny_encoder_factory(prompt="eol", pooling="mean")
    items = encoder.prepare(sample_texts[:2])
    plan = encoder.plan([("mean", -1), ("mean", 1)])
    with torch.inference_mode():
        references = reference_states(
            encoder.loaded, "fp32", [item.input_ids for item in items], plan.hidden_indices, [None]
        )
        full = encoder.forward(encoder.collate(items), plan)
    for index in plan.hidden_indices:
        for row, item in enumerate(items):
            n = len(item.input_ids)
            got = references.hidden[None][index][row, :n]
            np.testing.assert_allclose(got, full.hidden[index][row, :n], atol=ATOL, rtol=0)
    assert row_tokens(encoder.collate(items), 1) == items[1].input_ids


def test_prefix_reuse_is_a_runtime_knob(tiny_encoder_factory, tmp_path: Path):
    encoder = tiny_encoder_factory(prompt="eol")
    assert encoder.prefix_reuse and not encoder.with_setting(prefix_reuse=False).prefix_reuse
    assert encoder.with_setting(prefix_reuse=False).setting == encoder.setting  # not part of the setting
