"""Attention capture: row and full modes agree, capturing leaves vectors unchanged, bad input fails clearly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.encoding.capture import EagerAttentionError, capture_attention, capture_attention_rows, check_eager
from core.models.registry import load_model


def _batch(encoder, texts):
    prepared = encoder.prepare(texts)
    batch = encoder.collate(prepared)
    return prepared, batch, batch["start"] + batch["length"] - 1


def test_rows_equal_the_query_rows_of_full_maps(tiny_encoder, sample_texts):
    _, batch, query = _batch(tiny_encoder, sample_texts)
    backbone = tiny_encoder.loaded.backbone
    with torch.inference_mode():
        with capture_attention(backbone, None, "rows", query) as rows:
            tiny_encoder.forward(batch)
        with capture_attention(backbone, None, "full") as maps:
            tiny_encoder.forward(batch)
    assert sorted(rows) == sorted(maps) == [0, 1, 2]
    heads = backbone.config.num_attention_heads
    width = batch["input_ids"].shape[1]
    for layer in rows:
        assert rows[layer].shape == (len(sample_texts), heads, width)
        assert maps[layer].shape == (len(sample_texts), heads, width, width)
        expected = maps[layer][torch.arange(len(sample_texts)), :, query, :]
        torch.testing.assert_close(rows[layer], expected, rtol=0, atol=0)
        torch.testing.assert_close(rows[layer].sum(-1), torch.ones(len(sample_texts), heads), atol=1e-5, rtol=0)
        assert not rows[layer].requires_grad


def test_several_queries_per_text(tiny_encoder, sample_texts):
    _, batch, query = _batch(tiny_encoder, sample_texts[:3])
    queries = torch.stack([query, query - 1], dim=1)
    with torch.inference_mode(), capture_attention(tiny_encoder.loaded.backbone, [-1], "rows", queries) as rows:
        tiny_encoder.forward(batch)
    with torch.inference_mode(), capture_attention(tiny_encoder.loaded.backbone, [-1], "full") as maps:
        tiny_encoder.forward(batch)
    heads = tiny_encoder.loaded.backbone.config.num_attention_heads
    assert rows[2].shape == (3, heads, 2, batch["input_ids"].shape[1])
    torch.testing.assert_close(rows[2][1, :, 1], maps[2][1, :, int(query[1]) - 1])


@pytest.mark.parametrize("mode", ["rows", "full"])
def test_capturing_does_not_change_the_vectors(tiny_encoder_factory, sample_texts, mode):
    encoder = tiny_encoder_factory(prompt="cluster", pooling="last")
    plain = encoder.encode(sample_texts)
    _, _, query = _batch(encoder, sample_texts)
    with capture_attention(encoder.loaded.backbone, None, mode, query):
        captured = encoder.encode(sample_texts)
    # The capture runs eager attention, the plain encode SDPA: equal up to float rounding.
    np.testing.assert_allclose(captured, plain, atol=1e-5, rtol=0)


def test_layer_out_of_range_names_the_valid_range(tiny_encoder):
    backbone = tiny_encoder.loaded.backbone
    with (
        pytest.raises(ValueError, match=r"Attention layer 3 is out of range: use 0\.\.2 or -3\.\.-1"),
        capture_attention(backbone, [3], "rows", torch.tensor([0])),
    ):
        pass
    with (
        pytest.raises(ValueError, match=r"out of range: use 0\.\.2"),
        capture_attention_rows(backbone, [-4], torch.tensor([0])),
    ):
        pass


def test_mode_and_query_checks(tiny_encoder):
    backbone = tiny_encoder.loaded.backbone
    with pytest.raises(ValueError, match="Unknown capture mode 'maps'; choose one of: rows, full"):
        capture_attention(backbone, None, "maps").__enter__()  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs query_positions"), capture_attention(backbone, None, "rows"):
        pass


def test_sdpa_model_switches_to_eager_only_while_capturing(tiny_model_dir, sample_texts):
    from core.encoding.encoder import Encoder

    loaded = load_model(str(tiny_model_dir))
    assert loaded.backbone.config._attn_implementation == "sdpa"
    encoder = Encoder(loaded, precision="fp32", cache=False)
    prepared = encoder.prepare(sample_texts)
    batch = encoder.collate(prepared)
    with torch.inference_mode():
        fast = encoder.forward(batch, encoder.plan([("mean", -1), ("last", 1)]))
        with capture_attention(loaded.backbone, None, "full") as maps:
            assert loaded.backbone.config._attn_implementation == "eager"
            eager = encoder.forward(batch, encoder.plan([("mean", -1), ("last", 1)]))
    assert loaded.backbone.config._attn_implementation == "sdpa"
    assert len(maps) == loaded.num_layers
    for index in fast.hidden:
        torch.testing.assert_close(fast.hidden[index], eager.hidden[index], atol=1e-5, rtol=0)


def test_model_that_cannot_run_eager_attention_is_refused_with_the_fix(tiny_model_dir):
    loaded = load_model(str(tiny_model_dir))
    frozen = torch.nn.Module()  # no set_attn_implementation: cannot switch
    frozen.config = loaded.backbone.config
    frozen.layers = loaded.backbone.layers
    with pytest.raises(EagerAttentionError, match="attn_implementation='eager'"):
        check_eager(frozen)
    with pytest.raises(EagerAttentionError, match="'sdpa' attention"), capture_attention(frozen, None, "full"):
        pass


def test_a_bidirectional_encoder_is_refused(tiny_encoder):
    with (
        pytest.raises(ValueError, match="has no list of its decoder layers"),
        capture_attention(torch.nn.Linear(2, 2), None, "full"),
    ):
        pass


def test_rows_keep_the_graph_for_attention_pooling(tiny_encoder, sample_texts):
    _, batch, query = _batch(tiny_encoder, sample_texts[:2])
    with capture_attention_rows(tiny_encoder.loaded.backbone, [0], query) as rows:
        tiny_encoder.forward(batch)
    assert rows[0].shape == (2, batch["input_ids"].shape[1])
    assert rows[0].requires_grad
