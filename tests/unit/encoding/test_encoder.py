"""The encoder on a tiny fp32 Llama: batch independence, pooling by hand, agreement with
sentence-transformers, attention pooling, truncation and bad input (mteb protocol: test_mteb_encoder)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from core.encoding.capture import capture_attention_rows
from core.encoding.encoder import Encoder, PoolingPlan, validate_texts
from core.encoding.pooling import POOLING_MODES, LayerChoice
from core.encoding.prompts import resolve_prompt
from core.encoding.roles import TEXT_ROLES
from core.runtime.errors import ConfigError

LAYERS = (-1, 1, "last2")
ALL_COMBOS = [(mode, layer) for mode in POOLING_MODES for layer in LAYERS]
TOLERANCE = 1e-4


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max(initial=0.0))


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def hand_forward(encoder: Encoder, text: str, prompt: str = "none"):
    """The prepared text and the plain backbone's output on it alone (no padding, default positions)."""
    from core.encoding.capture import eager_attention

    item = encoder.prepare([text], prompt=prompt)[0]
    with torch.inference_mode(), eager_attention(encoder.loaded.backbone):  # SDPA returns no attention weights
        output = encoder.loaded.backbone(
            input_ids=torch.tensor([item.input_ids]), output_hidden_states=True, output_attentions=True
        )
    return item, output


# ----- batch independence


@pytest.fixture(scope="module")
def alone(tiny_encoder, sample_texts) -> dict[str, dict[tuple[str, str], np.ndarray]]:
    """Every text encoded on its own, for each prompt: the reference for batching tests."""
    result = {}
    for prompt in ("none", "eol"):
        rows = [tiny_encoder.encode_grid([text], ALL_COMBOS, prompt=prompt)[False] for text in sample_texts]
        result[prompt] = {combo: np.concatenate([row[combo] for row in rows]) for combo in rows[0]}
    return result


@pytest.mark.parametrize("prompt", ["none", "eol"])
@pytest.mark.parametrize(
    ("padding_side", "batch_tokens", "max_batch_size"),
    [("right", 4096, 64), ("left", 4096, 64), ("right", 60, 2), ("left", 60, 3), ("left", 1, 1)],
)
def test_vectors_do_not_depend_on_batching_or_padding_side(
    tiny_encoder_factory, alone, sample_texts, prompt, padding_side, batch_tokens, max_batch_size
):
    encoder = tiny_encoder_factory(padding_side=padding_side, batch_tokens=batch_tokens, max_batch_size=max_batch_size)
    texts = sample_texts
    if batch_tokens == 4096:  # one padded batch of texts of different lengths: padding is exercised
        prepared = encoder.prepare(texts, prompt=prompt)
        assert encoder.batches(prepared) == [sorted(range(len(texts)), key=lambda i: -len(prepared[i].input_ids))]
        assert len({len(item.input_ids) for item in prepared}) > 1
    grid = encoder.encode_grid(texts, ALL_COMBOS, prompt=prompt)[False]
    for combo, reference in alone[prompt].items():
        assert max_abs_diff(grid[combo], reference) <= TOLERANCE, combo


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_vectors_do_not_depend_on_batch_mates_or_order(tiny_encoder_factory, alone, sample_texts, padding_side):
    encoder = tiny_encoder_factory(padding_side=padding_side)
    texts = sample_texts
    fillers = ["Zebra " * 30, "x", "The green market opens on the street near the old city river."]
    mixed = texts[::-1] + fillers
    random.Random(3).shuffle(mixed)
    grid = encoder.encode_grid(mixed, ALL_COMBOS, prompt="eol")[False]
    positions = [mixed.index(text) for text in texts]
    for combo, reference in alone["eol"].items():
        assert max_abs_diff(grid[combo][positions], reference) <= TOLERANCE, combo


def test_encode_follows_encode_grid_for_every_mode(tiny_encoder_factory, alone, sample_texts):
    encoder = tiny_encoder_factory(prompt="eol", padding_side="left", max_batch_size=3)
    for mode in POOLING_MODES:
        vectors = encoder.encode(sample_texts, pooling=mode)
        assert max_abs_diff(vectors, alone["eol"][(mode, "-1")]) <= TOLERANCE, mode


def test_encode_grid_equals_separate_encode_calls_from_one_forward_per_batch(tiny_encoder, sample_texts):
    combos = [*ALL_COMBOS, ("mean", 0), ("last", "last3"), ("weighted", -2)]
    calls = []
    hook = tiny_encoder.loaded.backbone.register_forward_hook(lambda *_: calls.append(1))
    try:
        grid = tiny_encoder.encode_grid(sample_texts, combos, prompt="summarize")[False]
    finally:
        hook.remove()
    prepared = tiny_encoder.prepare(sample_texts, prompt="summarize")
    assert len(calls) == len(tiny_encoder.batches(prepared))  # one forward per batch serves all combos
    assert set(grid) == {(mode, str(layer)) for mode, layer in combos}
    for mode, layer in combos:
        separate = tiny_encoder.encode(sample_texts, prompt="summarize", pooling=mode, layer=layer)
        assert grid[(mode, str(layer))].dtype == np.float32
        assert max_abs_diff(grid[(mode, str(layer))], separate) <= 1e-6, (mode, layer)


def test_layers_are_distinct_hidden_states(tiny_encoder, sample_texts):
    grid = tiny_encoder.encode_grid(sample_texts, [("mean", 0), ("mean", 1), ("mean", -1), ("mean", 3)])[False]
    assert max_abs_diff(grid[("mean", "-1")], grid[("mean", "3")]) == 0.0
    assert max_abs_diff(grid[("mean", "0")], grid[("mean", "1")]) > 1e-3
    assert max_abs_diff(grid[("mean", "1")], grid[("mean", "-1")]) > 1e-3


# ----- pooling against hand computations on the model's own hidden states


@pytest.mark.parametrize("text", ["The red dog runs quickly in the garden.", "city"])
def test_pooling_modes_match_hand_computations_with_no_prompt(tiny_encoder, text):
    item, output = hand_forward(tiny_encoder, text)
    tokenizer = tiny_encoder.tokenizer
    assert item.input_ids[0] == tokenizer.bos_token_id
    assert item.input_ids[-1] == tokenizer.eos_token_id and item.eos_index == len(item.input_ids) - 1
    assert item.length == len(item.input_ids) - 1
    assert list(item.input_ids[:-1]) == tokenizer(text)["input_ids"]  # the tokenizer's encoding, then EOS
    hidden = output.last_hidden_state[0]
    n = item.length
    positions = torch.arange(1, n + 1, dtype=torch.float32)
    expected = {
        "last": hidden[n - 1],
        "eos": hidden[item.eos_index],
        "mean": hidden[:n].mean(0),
        "text_mean": hidden[1:n].mean(0),  # BOS is no text token
        "weighted": (positions[:, None] * hidden[:n]).sum(0) / positions.sum(),
    }
    for mode, vector in expected.items():
        ours = tiny_encoder.encode([text], prompt="none", pooling=mode)[0]
        assert max_abs_diff(ours, vector.numpy()) <= 1e-5, mode
    assert max_abs_diff(expected["eos"].numpy(), expected["last"].numpy()) > 1e-3  # eos reads the appended token
    assert max_abs_diff(expected["text_mean"].numpy(), expected["mean"].numpy()) > 1e-3


def test_appended_eos_does_not_change_last_and_mean(tiny_encoder):
    text = "An old man walks slowly from the market."
    item, output = hand_forward(tiny_encoder, text)
    with torch.inference_mode():
        without_eos = tiny_encoder.loaded.backbone(input_ids=torch.tensor([item.input_ids[:-1]])).last_hidden_state[0]
    n = item.length
    assert without_eos.shape[0] == n
    torch.testing.assert_close(output.last_hidden_state[0, :n], without_eos, rtol=0, atol=1e-5)


def test_text_mean_with_a_prompt_averages_only_the_text_tokens(tiny_encoder):
    text = "The woman drives a new car."
    item, output = hand_forward(tiny_encoder, text, prompt="eol")
    text_positions = [i for i, role in enumerate(item.roles) if role in TEXT_ROLES]
    assert text_positions[0] > 1 and text_positions[-1] < item.length - 1  # prompt tokens on both sides
    hidden = output.last_hidden_state[0]
    ours = tiny_encoder.encode([text], prompt="eol", pooling="text_mean")[0]
    assert max_abs_diff(ours, hidden[text_positions].mean(0).numpy()) <= 1e-5
    mean = tiny_encoder.encode([text], prompt="eol", pooling="mean")[0]
    assert max_abs_diff(ours, mean) > 1e-3


def test_layer_choices_match_hand_computations(tiny_encoder):
    text = "Teachers read old books near the river."
    item, output = hand_forward(tiny_encoder, text, prompt="cluster")
    states = output.hidden_states
    n = item.length
    cases = {0: states[0], 2: states[2], -2: states[2], "last2": (states[2] + states[3]) / 2}
    for layer, hidden in cases.items():
        ours = tiny_encoder.encode([text], prompt="cluster", pooling="last", layer=layer)[0]
        assert max_abs_diff(ours, hidden[0, n - 1].numpy()) <= 1e-5, layer


# ----- agreement with sentence-transformers


@pytest.fixture(scope="module")
def sentence_transformer(tiny_model_dir):
    from sentence_transformers import SentenceTransformer, models

    def build(mode: str) -> SentenceTransformer:
        # Plain text in, like ours: no chat template; max length stated, right padding (the tokenizer's).
        transformer = models.Transformer(
            str(tiny_model_dir),
            max_seq_length=512,
            modality_config={"text": {"method": "forward", "method_output_name": "last_hidden_state"}},
            module_output_name="token_embeddings",
        )
        pooling = models.Pooling(transformer.get_embedding_dimension(), pooling_mode=mode)
        return SentenceTransformer(modules=[transformer, pooling], device="cpu")

    return build


@pytest.mark.parametrize(("mode", "st_mode"), [("mean", "mean"), ("last", "lasttoken")])
def test_fp32_vectors_agree_with_sentence_transformers(sentence_transformer, tiny_encoder, sample_texts, mode, st_mode):
    reference = sentence_transformer(st_mode).encode(sample_texts, batch_size=3, convert_to_numpy=True)
    ours = tiny_encoder.encode(sample_texts, prompt="none", pooling=mode)
    assert ours.shape == reference.shape
    assert cosine_rows(ours, reference).min() >= 0.99999


# ----- the pooling plan, settings views and inputs_embeds


def test_plan_keeps_only_what_its_poolings_read(tiny_encoder_factory):
    encoder = tiny_encoder_factory(pooling="last", layer=1, attention_layer=0)
    own = encoder.plan()
    assert isinstance(own, PoolingPlan) and len(own.poolings) == 1
    assert (own.poolings[0].mode, own.poolings[0].layer) == ("last", LayerChoice(1))
    assert own.hidden_indices == (1,) and own.attention_layers == ()
    grid = encoder.plan([("mean", -1), ("attention", "last2"), ("weighted", 0)])
    assert [p.mode for p in grid.poolings] == ["mean", "attention", "weighted"]
    assert grid.hidden_indices == (0, 2, 3) and grid.attention_layers == (0,)  # attention_layer 0 of the encoder
    assert encoder.with_setting(attention_layer=-1).plan([("attention", -1)]).attention_layers == (2,)
    with pytest.raises(ConfigError, match="Unknown pooling 'max'"):
        encoder.plan([("max", -1)])
    with pytest.raises(ConfigError, match="Layer 9 is out of range"):
        encoder.plan([("mean", 9)])


def test_with_setting_shares_the_model_and_cache_and_validates(tiny_encoder_factory, tmp_path, sample_texts):
    encoder = tiny_encoder_factory(cache=tmp_path / "cache.sqlite", pooling="mean", prompt="none")
    view = encoder.with_setting(prompt="eol", pooling="last", layer="last2", max_length=64)
    assert view is not encoder and view.loaded is encoder.loaded and view.cache is encoder.cache
    assert (view.prompt.template, view.pooling, view.layer, view.max_length) == (
        resolve_prompt("eol").template, "last", LayerChoice(last_k=2), 64,
    )  # fmt: skip
    assert (encoder.pooling, encoder.layer, encoder.max_length) == ("mean", LayerChoice(-1), 512)  # unchanged
    assert view.with_setting().pooling == "last"  # None keeps the current value
    expected = tiny_encoder_factory(prompt="eol", pooling="last", layer="last2", max_length=64).encode(sample_texts)
    assert max_abs_diff(view.encode(sample_texts), expected) == 0.0
    for bad, message in (
        ({"layer": "abc"}, "Bad layer 'abc'"),
        ({"pooling": "max"}, "Unknown pooling 'max'"),
        ({"max_length": 2}, "max_length=2 is too small"),
        ({"attention_layer": 3}, "Attention layer 3 is out of range"),
        ({"precision": "fp8"}, "Unknown precision 'fp8'"),
    ):
        with pytest.raises(ConfigError, match=message):
            encoder.with_setting(**bad)


def test_the_encoder_takes_and_exposes_one_setting(tiny_encoder_factory, sample_texts):
    from core.encoding.setting import EmbeddingSetting

    default = tiny_encoder_factory()
    assert default.setting == EmbeddingSetting()  # the shipped recipe: eol, last token, final layer, 512 tokens
    assert (default.prompt.template, default.pooling) == (resolve_prompt("eol-noquote").template, "last")
    chosen = EmbeddingSetting(prompt="summarize", pooling="mean", layer="last2", max_length=64)
    by_setting = tiny_encoder_factory(setting=chosen)
    by_keywords = tiny_encoder_factory(prompt="summarize", pooling="mean", layer="last2", max_length=64)
    assert by_setting.setting == by_keywords.setting == chosen
    assert max_abs_diff(by_setting.encode(sample_texts), by_keywords.encode(sample_texts)) == 0.0
    assert default.with_setting(chosen).setting == chosen
    assert max_abs_diff(default.with_setting(chosen).encode(sample_texts), by_setting.encode(sample_texts)) == 0.0
    # The model's facts are filled in: token prepending's default layer range for this depth.
    assert default.with_setting(method="tp").setting.method == default.with_setting(method="tp").method.spec != "tp"
    with pytest.raises(TypeError, match="not both"):
        tiny_encoder_factory(setting=chosen, pooling="last")
    with pytest.raises(TypeError, match="not both"):
        default.with_setting(chosen, layer=1)


def test_an_adapter_s_trained_setting_is_the_default(tiny_model_dir, tiny_adapter_dir):
    from core.encoding.setting import EmbeddingSetting
    from core.models.adapters import read_metadata

    encoder = Encoder(str(tiny_model_dir), tiny_adapter_dir, precision="fp32", cache=False)
    trained = read_metadata(tiny_adapter_dir)
    assert encoder.setting == EmbeddingSetting.resolve(trained)
    overridden = Encoder(str(tiny_model_dir), tiny_adapter_dir, precision="fp32", cache=False, pooling="mean")
    assert overridden.setting == EmbeddingSetting.resolve(trained, pooling="mean")


@pytest.mark.parametrize("mode", POOLING_MODES)
def test_forward_on_inputs_embeds_equals_forward_on_ids(tiny_encoder_factory, sample_texts, mode):
    encoder = tiny_encoder_factory(prompt="eol", pooling=mode, layer="last2", padding_side="left")
    batch = encoder.collate(encoder.prepare(sample_texts))
    plan = encoder.plan()
    with torch.inference_mode():
        from_ids = plan.poolings[0](encoder.forward(batch, plan))
        embeds = encoder.loaded.backbone.get_input_embeddings()(batch["input_ids"])
        from_embeds = plan.poolings[0](encoder.forward(batch, plan, inputs_embeds=embeds))
        torch.testing.assert_close(from_embeds, from_ids, rtol=0, atol=1e-5)
        with pytest.raises(ValueError, match="do not match the batch"):
            encoder.forward(batch, plan, inputs_embeds=embeds[:, 1:])
    assert max_abs_diff(from_ids.numpy(), encoder.encode(sample_texts)) <= 1e-5


# ----- attention pooling


def test_attention_row_is_the_last_text_token_attention_and_sums_to_one(tiny_encoder_factory, sample_texts):
    encoder = tiny_encoder_factory(padding_side="left")
    prepared = encoder.prepare(sample_texts, prompt="eol")
    batch = encoder.collate(prepared)
    with torch.inference_mode():
        states = encoder.forward(batch, encoder.plan([("attention", -1)]))
    assert set(states.attention_rows) == {2}
    rows = states.attention_rows[2]
    sequence = states.sequence_mask()
    query = states.start + states.length - 1
    for b, item in enumerate(prepared):
        assert float(rows[b].sum()) == pytest.approx(1.0, abs=1e-5)
        assert float(rows[b][~sequence[b]].abs().sum()) == 0.0  # no weight on padding or the appended EOS
        # The same row as the model's own attention of the last wrapped token, mean over heads.
        _, output = hand_forward(encoder, sample_texts[b], prompt="eol")
        expected = output.attentions[2][0, :, item.length - 1, : item.length].mean(0)
        start = int(states.start[b])
        torch.testing.assert_close(rows[b, start : start + item.length], expected, rtol=0, atol=1e-5)
        assert int(query[b]) == start + item.length - 1
    # The pooling weights: the row restricted to the text and renormalised; they sum to 1 over text tokens.
    weights = rows * states.text_mask
    weights = weights / weights.sum(1, keepdim=True)
    assert torch.allclose(weights.sum(1), torch.ones(len(prepared)))
    assert bool((weights[~states.text_mask] == 0).all())
    expected_vectors = torch.einsum("bs,bsh->bh", weights, states.hidden[3]).numpy()
    ours = encoder.encode(sample_texts, prompt="eol", pooling="attention")
    assert max_abs_diff(ours, expected_vectors) <= 1e-5


def test_attention_layer_setting_changes_attention_pooling(tiny_encoder_factory, sample_texts):
    last = tiny_encoder_factory(attention_layer=-1).encode(sample_texts, pooling="attention", prompt="eol")
    first = tiny_encoder_factory(attention_layer=0).encode(sample_texts, pooling="attention", prompt="eol")
    assert max_abs_diff(last, first) > 1e-4


@pytest.mark.parametrize("mode", ["mean", "last", "attention", "eos"])
def test_capturing_attention_rows_does_not_change_embeddings(tiny_encoder, sample_texts, mode):
    plain = tiny_encoder.encode(sample_texts, prompt="eol", pooling=mode)
    backbone = tiny_encoder.loaded.backbone
    for index, text in enumerate(sample_texts):
        item = tiny_encoder.prepare([text], prompt="eol")[0]
        with capture_attention_rows(backbone, [0, 1, -1], torch.tensor([item.length - 1])) as rows:
            captured = tiny_encoder.encode([text], prompt="eol", pooling=mode)
        assert set(rows) == {0, 1, 2}
        assert all(float(row.sum()) == pytest.approx(1.0, abs=1e-5) for row in rows.values())
        assert max_abs_diff(captured[0], plain[index]) <= 1e-6


def test_capture_rejects_an_out_of_range_layer(tiny_encoder):
    with (
        pytest.raises(ValueError, match=r"Attention layer 3 is out of range: use 0\.\.2"),
        capture_attention_rows(tiny_encoder.loaded.backbone, [3], torch.tensor([0])),
    ):
        pass


# ----- truncation

LONG_TEXT = " ".join(["The quick red dog runs in the old garden near the river."] * 12)
LONG_UNICODE = " ".join(["Naïve façade — Ünïcødé café ✓ 東京"] * 15)


def template_overhead(encoder: Encoder, prompt: str) -> int:
    """Tokens a wrapped empty text takes, the appended EOS included."""
    return len(encoder.tokenizer(resolve_prompt(prompt).wrap("").string)["input_ids"]) + 1


@pytest.mark.parametrize("room", [1, 2, 3, 7, 30])
@pytest.mark.parametrize("prompt", ["eol", "none", "cot"])
@pytest.mark.parametrize("text", [LONG_TEXT, LONG_UNICODE], ids=["ascii", "unicode"])
def test_long_text_is_truncated_before_wrapping(tiny_encoder, tiny_encoder_factory, text, prompt, room):
    max_length = max(4, template_overhead(tiny_encoder, prompt) + room)
    encoder = tiny_encoder_factory(max_length=max_length)
    template = resolve_prompt(prompt)
    item = encoder.prepare([text], prompt=prompt)[0]
    assert item.truncated
    assert len(item.input_ids) <= max_length  # the appended EOS included
    assert item.input_ids[-1] == encoder.tokenizer.eos_token_id
    assert list(item.input_ids[:-1]) == encoder.tokenizer(item.wrapped)["input_ids"]
    assert item.wrapped.startswith(template.prefix) and item.wrapped.endswith(template.suffix)
    kept = item.wrapped[len(template.prefix) : len(item.wrapped) - len(template.suffix)]
    assert kept and text.startswith(kept) and len(kept) < len(text)


def test_short_text_is_not_truncated(tiny_encoder_factory):
    encoder = tiny_encoder_factory(max_length=40)
    item = encoder.prepare(["A cat sleeps."], prompt="eol")[0]
    assert not item.truncated and encoder.encode(["A cat sleeps."], prompt="eol") is not None
    assert encoder.last_truncated == 0 and item.wrapped == resolve_prompt("eol").wrap("A cat sleeps.").string


def test_truncation_warns_with_the_count(tiny_encoder_factory):
    encoder = tiny_encoder_factory(max_length=40)
    texts = ["A cat sleeps.", LONG_TEXT, "city", LONG_UNICODE]
    with pytest.warns(UserWarning, match=r"2 of 4 texts exceeded max_length=40 tokens"):
        vectors = encoder.encode(texts, prompt="eol")
    assert encoder.last_truncated == 2
    assert vectors.shape == (4, encoder.dim) and np.isfinite(vectors).all()


def test_template_leaving_no_room_raises(tiny_encoder_factory):
    encoder = tiny_encoder_factory(max_length=8)
    with pytest.raises(ValueError, match=r"leaves no room for text within max_length=8"):
        encoder.encode(["A cat sleeps on the mat."], prompt="knowledge")


def test_max_length_below_four_is_rejected(tiny_encoder_factory):
    with pytest.raises(ValueError, match="max_length=3 is too small"):
        tiny_encoder_factory(max_length=3)


# ----- bad input


def test_empty_list_gives_an_empty_float32_array(tiny_encoder):
    vectors = tiny_encoder.encode([])
    assert vectors.shape == (0, tiny_encoder.dim) and vectors.dtype == np.float32


@pytest.mark.parametrize("blank", ["", "   ", "\n\t"])
def test_empty_or_whitespace_text_names_its_index(tiny_encoder, blank):
    with pytest.raises(ValueError, match="Text 1 is empty or whitespace only"):
        tiny_encoder.encode(["fine", blank, "fine too"])


@pytest.mark.parametrize("bad", [None, 3, b"bytes", ["nested"]])
def test_non_string_text_names_its_index(tiny_encoder, bad):
    with pytest.raises(TypeError, match=rf"Text 2 is a {type(bad).__name__}, not a string"):
        tiny_encoder.encode(["a", "b", bad])


def test_a_single_string_is_refused(tiny_encoder):
    with pytest.raises(TypeError, match="not a single string"):
        tiny_encoder.encode("just one text")
    with pytest.raises(TypeError, match="not a single string"):
        validate_texts("x")


def test_unknown_pooling_lists_the_valid_modes(tiny_encoder, tiny_encoder_factory):
    with pytest.raises(ValueError, match="Unknown pooling 'max'") as info:
        tiny_encoder.encode(["a"], pooling="max")
    assert all(mode in str(info.value) for mode in POOLING_MODES)
    with pytest.raises(ValueError, match="Unknown pooling 'cls'"):
        tiny_encoder_factory(pooling="cls")


@pytest.mark.parametrize("layer", [4, -5, "last4"])
def test_layer_out_of_range_names_the_range(tiny_encoder, layer):
    with pytest.raises(ValueError, match=r"0\.\.3|more layers than the model has \(3\)"):
        tiny_encoder.encode(["a"], layer=layer)


def test_layer_out_of_range_fails_at_construction(tiny_encoder_factory):
    with pytest.raises(ValueError, match=r"0\.\.3"):
        tiny_encoder_factory(layer=7)


def test_unknown_prompt_name_raises(tiny_encoder, tiny_encoder_factory):
    with pytest.raises(ValueError, match=r"lacks the \{text\} placeholder"):
        tiny_encoder.encode(["a"], prompt="eol-typo")
    with pytest.raises(ValueError, match=r"lacks the \{text\} placeholder"):
        tiny_encoder_factory(prompt="eol-typo")


def test_unknown_precision_raises(tiny_encoder_factory):
    with pytest.raises(ValueError, match="Unknown precision 'int8'"):
        tiny_encoder_factory(precision="int8")


# ----- output


def test_output_is_float32_of_shape_texts_by_hidden(tiny_encoder, sample_texts):
    vectors = tiny_encoder.encode(sample_texts)
    assert vectors.dtype == np.float32 and vectors.shape == (len(sample_texts), 32) == (
        len(sample_texts),
        tiny_encoder.dim,
    )
    assert np.isfinite(vectors).all()


@pytest.mark.parametrize("mode", POOLING_MODES)
def test_normalize_gives_unit_vectors_in_the_same_direction(tiny_encoder, sample_texts, mode):
    raw = tiny_encoder.encode(sample_texts, pooling=mode, prompt="eol")
    unit = tiny_encoder.encode(sample_texts, pooling=mode, prompt="eol", normalize=True)
    assert unit.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-3)
    assert cosine_rows(raw, unit).min() >= 0.99999


def test_constructor_defaults_apply_and_calls_override_them(tiny_encoder_factory, sample_texts):
    encoder = tiny_encoder_factory(prompt="eol", pooling="last", layer=1)
    assert (encoder.prompt.name, encoder.pooling, str(encoder.layer)) == ("eol", "last", "1")
    default = encoder.encode(sample_texts)
    explicit = encoder.encode(sample_texts, prompt="eol", pooling="last", layer=1)
    assert max_abs_diff(default, explicit) == 0.0
    assert max_abs_diff(default, encoder.encode(sample_texts, prompt="none")) > 1e-3


# ----- keywords


def test_a_plain_list_with_an_extra_keyword_is_encoded_or_named(tiny_encoder, sample_texts):
    try:
        vectors = tiny_encoder.encode(sample_texts, batch_size=2)
    except TypeError as error:
        assert "batch_size" in str(error), f"cryptic error: {error}"
    else:
        assert max_abs_diff(vectors, tiny_encoder.encode(sample_texts)) == 0.0


def test_a_misspelt_keyword_is_named(tiny_encoder, sample_texts):
    with pytest.raises(TypeError, match="normalise"):
        tiny_encoder.encode(sample_texts, normalise=True)


# ----- a bidirectional encoder (no EOS, no last-token modes)


@pytest.fixture(scope="module")
def bert_encoder(tiny_bert_dir) -> Encoder:
    return Encoder(str(tiny_bert_dir), precision="fp32", cache=False)


def test_bidirectional_encoder_offers_only_mean_modes(bert_encoder):
    assert not bert_encoder.loaded.is_causal
    with pytest.raises(ValueError, match="for a bidirectional encoder; choose one of: mean, text_mean"):
        bert_encoder.encode(["a dog"], pooling="last")


def test_bidirectional_encoder_appends_no_eos_and_means_all_tokens(bert_encoder):
    text = "The red dog runs quickly in the garden."
    item = bert_encoder.prepare([text])[0]
    assert item.eos_index == -1 and item.length == len(item.input_ids)
    assert list(item.input_ids) == bert_encoder.tokenizer(text)["input_ids"]
    with torch.inference_mode():
        hidden = bert_encoder.loaded.backbone(input_ids=torch.tensor([item.input_ids])).last_hidden_state[0]
    assert max_abs_diff(bert_encoder.encode([text])[0], hidden.mean(0).numpy()) <= 1e-5
    assert max_abs_diff(bert_encoder.encode([text], pooling="text_mean")[0], hidden[1:].mean(0).numpy()) <= 1e-5


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_bidirectional_encoder_vectors_do_not_depend_on_batching(tiny_bert_dir, sample_texts, padding_side):
    batched = Encoder(str(tiny_bert_dir), precision="fp32", cache=False, padding_side=padding_side)
    alone_vectors = np.concatenate([batched.encode([text], prompt="eol") for text in sample_texts])
    assert max_abs_diff(batched.encode(sample_texts, prompt="eol"), alone_vectors) <= TOLERANCE
