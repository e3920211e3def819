"""Pooling on hand-made token states (no model): exact vectors for right and left padding; layer choice."""

from __future__ import annotations

import pytest
import torch

from core.encoding.pooling import POOLING_MODES, LayerChoice, Pooling, TokenStates, pool

NUM_HIDDEN_STATES = 4  # a 3-layer model: hidden_states[0] = embeddings, [3] = final output
PAD = -50.0  # padding states: any pooled value near this means padding leaked in

# Row 0, right-padded: BOS, prompt, text, text, appended EOS, pad  (start 0, length 4, EOS at 4).
# Row 1, left-padded:  pad, pad, BOS, text, text, appended EOS     (start 2, length 3, EOS at 5).
HIDDEN = torch.tensor(
    [
        [[1.0, 0.0], [3.0, 2.0], [5.0, -1.0], [7.0, 4.0], [100.0, 100.0], [PAD, PAD]],
        [[PAD, PAD], [PAD, PAD], [2.0, 2.0], [4.0, -2.0], [6.0, 0.0], [200.0, 200.0]],
    ]
)
TEXT_MASK = torch.tensor(
    [
        [False, False, True, True, False, False],
        [False, False, False, True, True, False],
    ]
)
ATTENTION_ROW = torch.tensor(
    [
        [0.4, 0.1, 0.3, 0.1, 0.05, 0.05],
        [0.0, 0.0, 0.5, 0.3, 0.1, 0.1],
    ]
)

# Worked out by hand from the numbers above.
EXPECTED = {
    "last": [[7.0, 4.0], [6.0, 0.0]],
    "eos": [[100.0, 100.0], [200.0, 200.0]],
    "mean": [[4.0, 1.25], [4.0, 0.0]],  # (1+3+5+7)/4, (0+2-1+4)/4 ; (2+4+6)/3, (2-2+0)/3
    "text_mean": [[6.0, 1.5], [5.0, -1.0]],
    # SGPT weights 1..n from the first real token: (1*1+2*3+3*5+4*7)/10 ... ; (1*2+2*4+3*6)/6 ...
    "weighted": [[5.0, 1.7], [28 / 6, -2 / 6]],
    # Attention on the text tokens, renormalised: row 0 0.3:0.1 -> .75/.25 ; row 1 0.3:0.1 -> .75/.25.
    "attention": [[5.5, 0.25], [4.5, -1.5]],
}


def make_states(hidden: dict[int, torch.Tensor] | None = None, eos_index=(4, 5)) -> TokenStates:
    return TokenStates(
        num_hidden_states=NUM_HIDDEN_STATES,
        hidden=hidden if hidden is not None else {3: HIDDEN},
        start=torch.tensor([0, 2]),
        length=torch.tensor([4, 3]),
        eos_index=torch.tensor(list(eos_index)),
        text_mask=TEXT_MASK,
        attention_rows={2: ATTENTION_ROW},
    )


def test_expected_table_covers_every_mode():
    assert set(EXPECTED) == set(POOLING_MODES)


@pytest.mark.parametrize("mode", POOLING_MODES)
def test_each_mode_gives_the_hand_computed_vectors(mode):
    result = Pooling(mode)(make_states())
    torch.testing.assert_close(result, torch.tensor(EXPECTED[mode]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("mode", POOLING_MODES)
def test_padding_side_does_not_change_the_pooled_vector(mode):
    # Row 1 again, right-padded this time: BOS, text, text, EOS, pad, pad.
    right = TokenStates(
        num_hidden_states=NUM_HIDDEN_STATES,
        hidden={3: torch.cat([HIDDEN[1:, 2:], HIDDEN[1:, :2]], dim=1)},
        start=torch.tensor([0]),
        length=torch.tensor([3]),
        eos_index=torch.tensor([3]),
        text_mask=torch.tensor([[False, True, True, False, False, False]]),
        attention_rows={2: torch.tensor([[0.5, 0.3, 0.1, 0.1, 0.0, 0.0]])},
    )
    torch.testing.assert_close(Pooling(mode)(right)[0], torch.tensor(EXPECTED[mode][1]), rtol=0, atol=1e-6)


def test_pool_function_matches_the_module():
    states = make_states()
    torch.testing.assert_close(pool(HIDDEN, states, "mean"), Pooling("mean")(states))


def test_layer_index_selects_that_hidden_state():
    other = HIDDEN * 2
    states = make_states({1: other, 3: HIDDEN})
    torch.testing.assert_close(Pooling("last", layer=1)(states), torch.tensor(EXPECTED["last"]) * 2)
    torch.testing.assert_close(Pooling("last", layer=-3)(states), torch.tensor(EXPECTED["last"]) * 2)


def test_last_k_layers_are_averaged_before_pooling():
    states = make_states({2: HIDDEN * 3, 3: HIDDEN})
    torch.testing.assert_close(Pooling("mean", layer="last2")(states), torch.tensor(EXPECTED["mean"]) * 2)


def test_attention_layer_selects_the_captured_row():
    uniform_text = torch.tensor([[0.0, 0.0, 1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0, 1.0, 0.0]])
    states = make_states()
    states.attention_rows[0] = uniform_text
    result = Pooling("attention", attention_layer=0)(states)
    torch.testing.assert_close(result, torch.tensor(EXPECTED["text_mean"]))  # equal weights on text = text mean
    # -3 is layer 0 of a 3-layer model
    torch.testing.assert_close(Pooling("attention", attention_layer=-3)(states), result)


def test_attention_pooling_without_a_captured_row_raises():
    with pytest.raises(ValueError, match="attention row of layer 1"):
        Pooling("attention", attention_layer=1)(make_states())


def test_eos_pooling_without_an_eos_raises():
    with pytest.raises(ValueError, match="EOS pooling needs an EOS token"):
        Pooling("eos")(make_states(eos_index=(4, -1)))


def test_unknown_pooling_mode_lists_the_valid_ones():
    with pytest.raises(ValueError, match="Unknown pooling 'max'") as info:
        Pooling("max")  # type: ignore[arg-type]
    assert all(mode in str(info.value) for mode in POOLING_MODES)
    with pytest.raises(ValueError, match="Unknown pooling"):
        pool(HIDDEN, make_states(), "max")  # type: ignore[arg-type]


def test_pooling_config_round_trips_through_its_dict():
    pooling = Pooling("weighted", layer="last3", attention_layer=1)
    config = pooling.get_config_dict()
    assert config == {"mode": "weighted", "layer": "last3", "attention_layer": 1}
    assert Pooling(**config).layer == pooling.layer


# ----- LayerChoice


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("-1", LayerChoice(index=-1)),
        (-1, LayerChoice(index=-1)),
        (3, LayerChoice(index=3)),
        ("12", LayerChoice(index=12)),
        (" 0 ", LayerChoice(index=0)),
        ("last4", LayerChoice(last_k=4)),
        ("LAST2", LayerChoice(last_k=2)),
        (LayerChoice(last_k=1), LayerChoice(last_k=1)),
    ],
)
def test_layer_choice_parses_good_specs(spec, expected):
    assert LayerChoice.parse(spec) == expected


@pytest.mark.parametrize("spec", ["foo", "last0", "last", "", "1.5", "-", True, False, 1.0, None])
def test_layer_choice_rejects_bad_specs(spec):
    with pytest.raises(ValueError, match="Bad layer"):
        LayerChoice.parse(spec)


def test_layer_choice_str_round_trips():
    for spec in ("-1", "0", "7", "last3"):
        assert str(LayerChoice.parse(spec)) == spec


@pytest.mark.parametrize(("index", "expected"), [(0, 0), (3, 3), (-1, 3), (-4, 0), (-2, 2)])
def test_layer_indices_in_range_are_made_non_negative(index, expected):
    assert LayerChoice(index).indices(NUM_HIDDEN_STATES) == (expected,)


@pytest.mark.parametrize("index", [4, 12, -5])
def test_out_of_range_layer_names_the_valid_range(index):
    with pytest.raises(ValueError, match=rf"Layer {index} is out of range") as info:
        LayerChoice(index).indices(NUM_HIDDEN_STATES)
    assert "0..3" in str(info.value) and "-4..-1" in str(info.value) and "3 layers" in str(info.value)


def test_last_k_indices_are_the_final_layers():
    assert LayerChoice(last_k=1).indices(NUM_HIDDEN_STATES) == (3,)
    assert LayerChoice(last_k=3).indices(NUM_HIDDEN_STATES) == (1, 2, 3)


def test_last_k_larger_than_the_model_raises():
    with pytest.raises(ValueError, match=r"'last4' asks for more layers than the model has \(3\)"):
        LayerChoice(last_k=4).indices(NUM_HIDDEN_STATES)


def test_pooling_on_an_out_of_range_layer_raises():
    with pytest.raises(ValueError, match="out of range"):
        Pooling("mean", layer=9)(make_states())
