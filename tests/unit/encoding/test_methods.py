"""Training-free methods on the tiny fp32 Llama: echo's roles and pooled copy, token prepending's
replacement in exactly the configured layers, ensembles as prompt means, batch independence, cache
keys, the CLI and clear errors for bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.embed import main as embed_main
from core.encoding.capture import decoder_layers
from core.encoding.encoder import Encoder
from core.encoding.methods import (
    ECHO_TEMPLATE,
    METAEOL,
    METAEOL_SHORT,
    PLAIN,
    TEMPLATE_FORMS,
    TP_MARKER,
    TP_PLACEHOLDER,
    TP_TEMPLATE,
    TP_TEMPLATES,
    Echo,
    Ensemble,
    Plain,
    TokenPrepending,
    backbone_hooks,
    parse_method,
    stored_prompt_name,
    token_prepending,
)
from core.encoding.pooling import POOLING_MODES, Pooling
from core.encoding.prompts import PROMPTS
from core.encoding.roles import TEXT_ROLES, Role
from core.runtime.errors import ConfigError, run_cli
from tests.conftest import TINY_LAYERS

TOLERANCE = 1e-4
COMBOS = [(mode, layer) for mode in POOLING_MODES for layer in (-1, 1)]
ECHO_TEMPLATES = [
    ECHO_TEMPLATE,
    'Repeat: "{text}" again: "{text}" done.',
    "{text} {text}",
    "{text}\nThe same text once more: {text} means in one word:",
]
TP_PLAIN_PROMPT = TP_TEMPLATE.replace(TP_MARKER, TP_PLACEHOLDER)


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max(initial=0.0))


# ----- specs


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("plain", PLAIN),
        ("echo", Echo()),
        ("tp", TokenPrepending()),
        ("tp:1-8", TokenPrepending(1, 8)),
        (" TP: 2 - 2 ", TokenPrepending(2, 2)),
        ("metaeol", METAEOL),
        ("metaeol-short", METAEOL_SHORT),
        ("ensemble:eol+summarize", Ensemble(("eol", "summarize"))),
        ("plain+norm", Plain(normalize_text=True)),
        ("tp:1-8+norm", TokenPrepending(1, 8, normalize_text=True)),
        ("tp-noquote:1-6", TokenPrepending(1, 6, template_text=TP_TEMPLATES["tp-noquote"])),
        ("metaeol+norm", Ensemble(METAEOL.prompts, "metaeol", normalize_text=True)),
        ("ensemble:eol+summarize+norm", Ensemble(("eol", "summarize"), normalize_text=True)),
    ],
)
def test_method_specs_parse_and_print_back(spec, expected):
    method = parse_method(spec)
    assert method == expected
    assert parse_method(method.spec) == method
    if spec not in ("tp", " TP: 2 - 2 "):  # canonical specs print back as written
        assert method.spec == spec


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("echoes", "Unknown method"),
        ("tp:1", "tp:START-EXIT"),
        ("tp:5-2", "0 <= START <= EXIT"),
        ("ensemble:eol", "at least two prompts"),
        ("ensemble:eol+nonsense", "Ensemble prompt"),
        ("echo+norm", "echo publishes no text normalisation"),
    ],
)
def test_bad_specs_name_the_fix(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_method(spec)


def test_bad_templates_name_the_fix(tiny_encoder_factory):
    with pytest.raises(ConfigError, match="twice"):
        Echo("Rewrite: {text}")
    with pytest.raises(ConfigError, match="twice"):
        tiny_encoder_factory(method="echo", prompt="eol")  # a one-copy template under echo
    with pytest.raises(ConfigError, match=r"placeholder <PST>"):
        TokenPrepending(template_text='This sentence: "{text}" means in one word:')
    with pytest.raises(ConfigError, match=r"placeholder <PST>"):
        tiny_encoder_factory(method="tp", prompt="eol")
    with pytest.raises(ConfigError, match=r"placeholder <PST> once, before"):
        TokenPrepending(template_text='This sentence: "{text}" <PST> means in one word:')
    with pytest.raises(ConfigError, match="outside this model's 3 decoder layers"):
        tiny_encoder_factory(method="tp:1-4")
    with pytest.raises(ConfigError, match="one token"):  # the tiny tokenizer splits "<PST>" into pieces
        tiny_encoder_factory(method=TokenPrepending(1, 2, placeholder="<PST>"))
    with pytest.raises(ConfigError, match="brings its own prompts"):
        tiny_encoder_factory(method="metaeol", prompt="eol")


def test_methods_are_refused_on_a_bidirectional_encoder(tiny_bert_dir):
    with pytest.raises(ConfigError, match="use method plain"):
        Encoder(str(tiny_bert_dir), method="echo", cache=False, precision="fp32")


# ----- echo


@pytest.mark.parametrize("template", ECHO_TEMPLATES)
def test_echo_roles_mark_the_first_copy_and_pool_the_second(tiny_encoder_factory, sample_texts, template):
    encoder = tiny_encoder_factory(method="echo", prompt=template)
    tokenizer = encoder.tokenizer
    first, middle, _last = template.split("{text}")
    for text, item in zip(sample_texts, encoder.prepare(sample_texts), strict=True):
        assert item.wrapped == template.replace("{text}", text)
        offsets = tokenizer(item.wrapped, return_offsets_mapping=True)["offset_mapping"]
        second_start = len(first) + len(text) + len(middle)
        first_span, second_span = (len(first), len(first) + len(text)), (second_start, second_start + len(text))
        for (start, end), role in zip(offsets, item.roles, strict=False):
            in_second = start < second_span[1] and end > second_span[0]
            in_first = start < first_span[1] and end > first_span[0]
            assert (role in TEXT_ROLES) == in_second, (text, start, end, role)
            assert (role == Role.FIRST_COPY) == (in_first and not in_second), (text, start, end, role)
        # The pooled span is exactly the second copy's tokens, and it spells the text.
        pooled_start, pooled_end = item.pooled
        assert all(role in TEXT_ROLES for role in item.roles[pooled_start:pooled_end])
        assert Role.FIRST_COPY in item.roles[:pooled_start]
        covered = item.wrapped[offsets[pooled_start][0] : offsets[pooled_end - 1][1]]
        assert text in covered and len(covered) <= len(text) + 2  # at most a glued quote/space either side


def test_echo_pools_only_the_second_copy(tiny_encoder_factory):
    encoder = tiny_encoder_factory(method="echo")
    text = "The red dog runs quickly in the garden."
    item = encoder.prepare([text])[0]
    with torch.inference_mode():
        hidden = encoder.loaded.backbone(input_ids=torch.tensor([item.input_ids])).last_hidden_state[0]
    start, end = item.pooled
    grid = encoder.encode_grid([text], [("mean", -1), ("last", -1)])[False]
    assert max_abs_diff(grid[("mean", "-1")][0], hidden[start:end].mean(0).numpy()) <= 1e-5
    assert max_abs_diff(grid[("last", "-1")][0], hidden[end - 1].numpy()) <= 1e-5
    assert start > item.roles.index(Role.FIRST_COPY)  # and the mean does not read the first copy
    assert max_abs_diff(grid[("mean", "-1")][0], hidden[: item.length].mean(0).numpy()) > 1e-3


def test_echo_truncates_the_text_before_wrapping_so_both_copies_match(tiny_encoder_factory):
    encoder = tiny_encoder_factory(method="echo", max_length=40)
    text = " ".join(["The green market opens on the street near the old city river."] * 4)
    with pytest.warns(UserWarning, match="truncated"):
        encoder.encode([text])
    item = encoder.prepare([text])[0]
    assert item.truncated and len(item.input_ids) <= 40
    first, middle, last = ECHO_TEMPLATE.split("{text}")
    copy = item.wrapped[len(first) : item.wrapped.index(middle, len(first))]
    assert item.wrapped == first + copy + middle + copy + last and text.startswith(copy)
    # As many tokens as fit: one more text token would not.
    longer = text[: len(copy) + text[len(copy) :].find(" ", 1)]
    longer_ids = encoder.tokenizer(ECHO_TEMPLATE.replace("{text}", longer))["input_ids"]
    assert len(longer_ids) + 1 > 40


# ----- token prepending


def layer_inputs(backbone) -> tuple[dict[int, torch.Tensor], list]:
    """Forward hooks recording each decoder layer's hidden-state input (after any pre-hook)."""
    inputs: dict[int, torch.Tensor] = {}
    handles = []
    for index, layer in enumerate(decoder_layers(backbone)):

        def hook(_module, args, kwargs, _output, index=index):
            inputs[index] = (args[0] if args else kwargs["hidden_states"]).detach().clone()

        handles.append(layer.register_forward_hook(hook, with_kwargs=True))
    return inputs, handles


@pytest.mark.parametrize(("spec", "padding_side"), [("tp:1-3", "right"), ("tp:1-2", "left"), ("tp:0-1", "left")])
def test_tp_replaces_the_placeholder_in_exactly_the_configured_layers(
    tiny_encoder_factory, sample_texts, spec, padding_side
):
    encoder = tiny_encoder_factory(method=spec, padding_side=padding_side)
    method = encoder.method
    batch = encoder.collate(encoder.prepare(sample_texts))
    rows = torch.arange(len(sample_texts))
    placeholder, last = batch["placeholder"], batch["start"] + batch["length"] - 1
    assert {encoder.tokenizer.decode(int(i)).strip() for i in batch["input_ids"][rows, placeholder]} == {TP_PLACEHOLDER}
    inputs, handles = layer_inputs(encoder.loaded.backbone)
    try:
        with torch.inference_mode(), backbone_hooks(method, encoder.loaded.backbone, batch):
            output = encoder.loaded.backbone(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                position_ids=batch["position_ids"],
                output_hidden_states=True,
            )
    finally:
        for handle in handles:
            handle.remove()
    for layer in range(TINY_LAYERS):
        previous = output.hidden_states[layer]  # the previous layer's output (embeddings for layer 0)
        at_placeholder = inputs[layer][rows, placeholder]
        if layer in method.layers:
            assert torch.equal(at_placeholder, previous[rows, last]), layer
        else:
            assert torch.equal(at_placeholder, previous[rows, placeholder]), layer
            assert not torch.allclose(at_placeholder, previous[rows, last]), layer
        # Every other position is left as the previous layer wrote it.
        others = torch.ones_like(batch["attention_mask"], dtype=torch.bool)
        others[rows, placeholder] = False
        assert torch.equal(inputs[layer][others], previous[others]), layer
    assert all(not layer._forward_pre_hooks for layer in decoder_layers(encoder.loaded.backbone))


def test_token_prepending_hooks_are_named_and_removed_even_on_error(tiny_loaded):
    layers = decoder_layers(tiny_loaded.backbone)
    hooks = token_prepending(tiny_loaded.backbone, range(1, 3), torch.tensor([1]), torch.tensor([4]))
    with pytest.raises(RuntimeError, match="boom"), hooks as names:
        assert names == ["layers.1.token_prepending", "layers.2.token_prepending"]
        assert len(layers[1]._forward_pre_hooks) == 1 and not layers[0]._forward_pre_hooks
        raise RuntimeError("boom")
    assert all(not layer._forward_pre_hooks for layer in layers)


def test_tp_with_an_empty_range_equals_plain_with_the_same_prompt(tiny_encoder_factory, sample_texts):
    plain = tiny_encoder_factory(prompt=TP_PLAIN_PROMPT).encode_grid(sample_texts, COMBOS)[False]
    empty = tiny_encoder_factory(method="tp:2-2").encode_grid(sample_texts, COMBOS)[False]
    active = tiny_encoder_factory(method="tp:1-3").encode_grid(sample_texts, COMBOS)[False]
    for combo in plain:
        assert max_abs_diff(empty[combo], plain[combo]) <= 1e-6, combo
    assert max_abs_diff(active[("last", "-1")], plain[("last", "-1")]) > 1e-3  # the hooks do change vectors


def test_tp_default_range_is_a_fifth_of_the_depth_from_layer_one():
    assert TokenPrepending().for_model(30) == TokenPrepending(1, 6)
    assert TokenPrepending().for_model(18) == TokenPrepending(1, 4)
    assert TokenPrepending().for_model(3) == TokenPrepending(1, 2)


# ----- ensembles


def test_an_ensemble_is_the_mean_of_its_prompts_plain_vectors(tiny_encoder_factory, sample_texts):
    prompts = ("eol", "summarize", "This text: {text} is about")
    grid = tiny_encoder_factory(method=Ensemble(prompts)).encode_grid(sample_texts, COMBOS)[False]
    plain = tiny_encoder_factory()
    singles = [plain.encode_grid(sample_texts, COMBOS, prompt=prompt)[False] for prompt in prompts]
    for combo in grid:
        assert max_abs_diff(grid[combo], np.mean([single[combo] for single in singles], axis=0)) <= 1e-6


def test_metaeol_uses_the_papers_eight_task_framed_prompts_with_the_closing_quote():
    assert len(METAEOL.prompts) == 8 == len(METAEOL_SHORT.prompts)
    assert all(prompt.endswith('in one word:"') and prompt.count("{text}") == 1 for prompt in METAEOL.prompts)
    assert all(prompt.startswith("In this task, you're") for prompt in METAEOL.prompts)
    assert all(prompt.endswith("in one word:") for prompt in METAEOL_SHORT.prompts)


def test_named_template_forms_of_echo_and_tp():
    assert Echo().template().name == "echo"
    paper = Echo().template("echo-paper")
    assert (paper.name, paper.wrap("hi").string) == (
        "echo-paper",
        "Rewrite the following paragraph: hi. The rewritten paragraph: hi",
    )
    assert TokenPrepending().template().template.endswith('in one word:"')
    bare = TokenPrepending().template("tp-noquote")
    assert (bare.name, bare.template) == ("tp-noquote", TP_TEMPLATE.removesuffix('"'))
    assert TEMPLATE_FORMS["eol"] == TP_TEMPLATE.replace(f"{TP_MARKER} ", "")


def test_normalisation_is_off_by_default_and_keys_and_wraps_when_chosen(tiny_encoder_factory):
    text = 'she said "no"'
    for spec in ("plain", "tp:1-2", "metaeol", "ensemble:eol+cot"):
        method = parse_method(spec)
        normalised = parse_method(spec + "+norm")
        assert "text_normalization" not in method.settings()
        assert normalised.settings()["text_normalization"] == "reference"
        if isinstance(normalised, Ensemble):
            templates = normalised.templates()
        else:
            templates = [
                normalised.template() if isinstance(normalised, TokenPrepending) else normalised.template("eol")
            ]
        for template in templates:
            wrapped = template.wrap(text)
            assert wrapped.string[wrapped.text_start : wrapped.text_end] == "she said 'no'"
    plain = tiny_encoder_factory(prompt="eol")
    normalised = tiny_encoder_factory(prompt="eol", method="plain+norm")
    assert (
        plain.encode([text + "?"], pooling="last").tolist() != normalised.encode([text + "?"], pooling="last").tolist()
    )
    assert np.allclose(
        normalised.encode([text + "?"], pooling="last"), plain.encode(["she said 'no'."], pooling="last")
    )


@pytest.mark.parametrize(
    ("record", "name"),
    [
        ({"name": "eol", "template": 'This sentence: "{text}" means in one word:'}, "eol-noquote"),
        ({"name": "eol", "template": 'This sentence: "{text}" means in one word:"'}, "eol"),
        ({"name": "cot", "template": PROMPTS["cot-noquote"]}, "cot-noquote"),
        ({"name": "tp", "template": 'This sentence: <PST> "{text}" means in one word:'}, "tp-noquote"),
        ({"name": "metaeol", "template": None, "templates": list(METAEOL_SHORT.prompts)}, "metaeol-short"),
        ({"name": "metaeol", "template": None, "templates": list(METAEOL.prompts)}, "metaeol"),
        ({"name": "custom", "template": 'This sentence: "{text}" means in one word:'}, "custom"),
        ({"name": "summarize", "template": PROMPTS["summarize"]}, "summarize"),
    ],
)
def test_stored_records_of_the_former_quote_less_forms_are_labelled_by_their_current_name(record, name):
    assert stored_prompt_name(record) == name


# ----- every method: independent of batch-mates and padding side


@pytest.mark.parametrize("spec", ["echo", "tp:1-3", "tp:0-2", "ensemble:eol+summarize", "metaeol"])
def test_method_vectors_do_not_depend_on_batching_or_padding_side(tiny_encoder_factory, sample_texts, spec):
    combos = COMBOS if spec != "metaeol" else [("last", -1), ("mean", -1)]
    alone = tiny_encoder_factory(method=spec, batch_tokens=1, max_batch_size=1)
    reference = alone.encode_grid(sample_texts, combos)[False]
    fillers = ["Zebra " * 30, "x", "The green market opens on the street near the old city river."]
    for padding_side, batch_tokens in (("right", 4096), ("left", 4096), ("left", 90)):
        encoder = tiny_encoder_factory(method=spec, padding_side=padding_side, batch_tokens=batch_tokens)
        grid = encoder.encode_grid(fillers + sample_texts[::-1], combos)[False]
        for combo, vectors in reference.items():
            assert max_abs_diff(grid[combo][len(fillers) :][::-1], vectors) <= TOLERANCE, (padding_side, combo)


# ----- cache keys, adapters, CLI


def test_cache_keys_include_the_method_and_its_parameters(tiny_encoder_factory):
    def settings(encoder):
        return encoder.settings(encoder.prompt, Pooling("last"), False)

    plain = settings(tiny_encoder_factory(prompt="eol"))
    assert "method" not in plain  # plain keeps the keys it had before methods existed
    keys = {
        json.dumps(settings(tiny_encoder_factory(method=spec)), sort_keys=True)
        for spec in ("echo", "tp:1-2", "tp:1-3", "tp:0-2", "metaeol", "ensemble:eol+summarize")
    }
    assert len(keys) == 6
    tp = settings(tiny_encoder_factory(method="tp:1-2"))
    assert (tp["method"], tp["tp_start"], tp["tp_exit"], tp["tp_placeholder"]) == ("tp", 1, 2, TP_PLACEHOLDER)


def test_a_cached_method_serves_its_own_vectors(tiny_loaded, sample_texts, tmp_path):
    fresh = {}
    for spec in ("plain", "echo", "tp:1-3"):
        fresh[spec] = Encoder(tiny_loaded, method=spec, precision="fp32", cache=tmp_path / "c.sqlite").encode(
            sample_texts
        )
    for spec in ("plain", "echo", "tp:1-3"):
        again = Encoder(tiny_loaded, method=spec, precision="fp32", cache=tmp_path / "c.sqlite").encode(sample_texts)
        assert max_abs_diff(again, fresh[spec]) == 0.0
    assert max_abs_diff(fresh["echo"], fresh["plain"]) > 1e-3


def test_methods_compose_with_an_adapter_on_one_model(tiny_model_dir, tiny_adapter_dir, tiny_loaded, sample_texts):
    with_adapter = Encoder(str(tiny_model_dir), tiny_adapter_dir, method="tp:1-3", precision="fp32", cache=False)
    adapted = with_adapter.encode(sample_texts)
    base = with_adapter.encode(sample_texts, use_adapter=False)
    reference = Encoder(tiny_loaded, method="tp:1-3", pooling=with_adapter.pooling, precision="fp32", cache=False)
    reference_vectors = reference.encode(sample_texts)  # tp's own template, as with the adapter
    assert max_abs_diff(base, reference_vectors) <= TOLERANCE
    assert max_abs_diff(adapted, base) > 1e-4


def test_embed_cli_takes_a_method_and_an_ensembles_prompts(tiny_model_dir, tmp_path, capsys):
    source = tmp_path / "texts.txt"
    source.write_text("The red dog runs.\nA cat sleeps.\n")
    output = tmp_path / "out.npy"
    common = ["--model", str(tiny_model_dir), "--input", str(source), "--output", str(output), "--no-cache"]
    assert embed_main([*common, "--method", "tp:1-2", "--pooling", "last", "--precision", "fp32"]) == 0
    sidecar = json.loads(output.with_suffix(".json").read_text())
    assert (sidecar["method_spec"], sidecar["tp_exit"]) == ("tp:1-2", 2)
    assert embed_main([*common, "--method", "ensemble", "--prompts", "eol,summarize", "--pooling", "last"]) == 0
    assert json.loads(output.with_suffix(".json").read_text())["method_spec"] == "ensemble:eol+summarize"
    assert run_cli(embed_main, [*common, "--method", "ensemble", "--prompts", "eol"]) == 2
    assert "at least two prompts" in capsys.readouterr().err


def test_bench_times_the_methods_and_prints_tp_overhead(tiny_model_dir, sample_texts, capsys):
    from core.bench.cli import method_speeds

    method_speeds(str(tiny_model_dir), sample_texts, "fp32", "tp:1-3", rounds=1)
    out = capsys.readouterr().out
    lines = {line.split(":")[0].strip(): line for line in out.splitlines()}
    assert {"plain (eol)", "echo", "tp 1-1 (no hooks)", "tp 1-3"} <= set(lines)
    tokens = {name: int(lines[name].split(":")[1].split()[0]) for name in ("tp 1-1 (no hooks)", "tp 1-3")}
    assert tokens["tp 1-1 (no hooks)"] == tokens["tp 1-3"]  # equal tokens: the difference is the hooks
    assert "token prepending overhead at equal tokens" in out
