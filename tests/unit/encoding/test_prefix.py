"""Prefix reuse gives the vectors of full forwards, for every pooling, layer, method, padding side and the shared
base+adapter trunk; it runs fewer tokens where texts share a prefix, and none of it where it is not exact."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from core.encoding.batching import without_appended_eos
from core.encoding.prefix import (
    batch_prefix,
    common_prefix,
    plan_reuse,
    reference_states,
    reuse_blocker,
    reuse_limit,
    row_tokens,
    select_references,
    token_passes,
)
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


def pooled(encoder, items, plan, references) -> np.ndarray:
    """The plan's first pooling of ``items`` (base), through ``Encoder.forward_shared``."""
    out = np.zeros((len(items), encoder.dim), dtype=np.float32)
    for group, states in encoder.forward_shared(items, plan, [False], references):
        out[group] = plan.poolings[0](states[False]).numpy()
    return out


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
    counter = token_passes(encoder.loaded)
    with torch.inference_mode():
        before = counter.snapshot()
        reused = pooled(encoder, items, plan, (references, of))
        run = counter.since(before)
        full = pooled(encoder.with_setting(prefix_reuse=False), items, plan, None)
    np.testing.assert_allclose(reused, full, atol=ATOL, rtol=0)
    # Each row runs exactly what follows its common prefix with its original (no two rows share more), without
    # the appended EOS mean pooling does not read.
    items = [without_appended_eos(item) for item in items]
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
    runnable = [without_appended_eos(item) for item in encoder.prepare(sample_texts)]  # its pooling reads no EOS
    assert counter.since(before) == sum(len(item.input_ids) for item in runnable)
    before = counter.snapshot()
    encoder.with_setting(pooling="eos").encode(sample_texts)
    assert (
        counter.since(before)
        == sum(len(item.input_ids) for item in encoder.prepare(sample_texts))
        > sum(len(item.input_ids) for item in runnable)
    )


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


@pytest.mark.parametrize("variants", [[None], [False, True]])
def test_references_run_their_shared_prefix_once_and_keep_a_full_forwards_states(
    tiny_encoder_factory, tiny_model_dir, tiny_adapter_dir, sample_texts, variants
):
    """``Encoder.references``: the template's prefix once, each text's rest batched by length; the kept keys, values
    and states equal one padded batch of whole texts (``reference_states``), in the texts' order."""
    encoder = tiny_encoder_factory(
        prompt="eol", pooling="mean", **({"adapter": tiny_adapter_dir} if None not in variants else {})
    )
    items = encoder.prepare(sample_texts[:5])
    plan = encoder.plan([("mean", -1), ("mean", 1)])
    counter = token_passes(encoder.loaded)
    before = counter.snapshot()
    shared = encoder.references(items, plan, variants)
    passes = counter.since(before)
    ids = [item.input_ids for item in encoder.runnable(items, plan)]
    prefix = min(common_prefix(ids[0], other) for other in ids)
    # Base and adapter run apart where the adapter adapts every layer (the tiny one does): twice the tokens.
    runs = 2 if len(variants) == 2 and encoder.loaded.adapter_free_layers == 0 else 1
    assert prefix >= 2 and passes == runs * (sum(len(t) for t in ids) - (len(ids) - 1) * prefix)
    with torch.inference_mode():
        whole = reference_states(encoder.loaded, "fp32", ids, plan.hidden_indices, variants)
    assert shared.ids == whole.ids and torch.equal(shared.lengths, whole.lengths)
    for variant in variants:
        for row, n in enumerate(whole.lengths.tolist()):
            for index in plan.hidden_indices:
                got, want = shared.hidden[variant][index][row, :n], whole.hidden[variant][index][row, :n]
                np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)
            for (k, v), (k_whole, v_whole) in zip(shared.past[variant], whole.past[variant], strict=True):
                np.testing.assert_allclose(k[row, :, :n], k_whole[row, :, :n], atol=ATOL, rtol=0)
                np.testing.assert_allclose(v[row, :, :n], v_whole[row, :, :n], atol=ATOL, rtol=0)


def test_prefix_reuse_is_a_runtime_knob(tiny_encoder_factory, tmp_path: Path):
    encoder = tiny_encoder_factory(prompt="eol")
    assert encoder.prefix_reuse and not encoder.with_setting(prefix_reuse=False).prefix_reuse
    assert encoder.with_setting(prefix_reuse=False).setting == encoder.setting  # not part of the setting


# ----- families: texts sharing prefixes with their reference and with each other


def least_run(texts, reference) -> int:
    """Tokens a family must run at least: its token prefixes that are not prefixes of ``reference`` (its trie's
    nodes outside the reference), plus one token for each text already run whole by then (a duplicate, or a
    prefix of the reference: every text runs at least its last token)."""
    known = {tuple(reference[:n]) for n in range(1, len(reference) + 1)}
    nodes = {tuple(text[:n]) for text in texts for n in range(1, len(text) + 1)} - known
    copies = Counter(tuple(text) for text in texts)
    return len(nodes) + sum(n if list(t) == list(reference[: len(t)]) else n - 1 for t, n in copies.items())


@pytest.mark.parametrize("seed", range(6))
def test_plan_reuse_runs_each_shared_prefix_once(seed):
    rng = np.random.default_rng(seed)
    reference = [int(t) for t in rng.integers(0, 4, size=12)]
    texts = []
    for _ in range(30):  # cuts of the reference, as deletion and insertion curves make, and some strangers
        kept = [t for t in reference if rng.random() > 0.3] if rng.random() > 0.1 else list(rng.integers(0, 4, 9))
        texts.append([int(t) for t in kept] or [1])
    texts += [list(texts[3])]  # a duplicate
    limits = [None if i % 5 else 4 for i in range(len(texts))]
    steps = plan_reuse(texts, reference, limits)
    for text, step, limit in zip(texts, steps, limits, strict=True):
        parent = reference if step.parent < 0 else texts[step.parent]
        assert step.reuse <= min(common_prefix(text, parent), len(text) - 1, limit if limit is not None else 99)
        assert step.wave == (1 if step.parent < 0 else steps[step.parent].wave + 1)
    unlimited = plan_reuse(texts, reference)
    # Without limits every token the family shares runs once.
    assert sum(len(t) - s.reuse for t, s in zip(texts, unlimited, strict=True)) == least_run(texts, reference)


def perturbed_family(texts: list[str]) -> tuple[list[str], list[int]]:
    """Per text, deletion- and insertion-like texts: words 1, 3, 5, ... cut one after another, and all of them cut
    then put back one after another (each shares more with the previous one than with the text)."""
    out, of = [], []
    for index, text in enumerate(texts):
        words = text.split()
        cuts = list(range(1, len(words), 2))[:4]
        for step in range(1, len(cuts) + 1):
            for removed in (cuts[:step], cuts[step:]):
                out.append(" ".join(w for i, w in enumerate(words) if i not in removed))
                of.append(index)
    return out, of


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("method,prompt", [("plain", "eol"), ("echo", None), ("tp:1-3", None)])
def test_a_family_runs_its_shared_prefixes_once_with_full_forward_vectors(
    tiny_encoder_factory, sample_texts, method, prompt, padding_side
):
    encoder = tiny_encoder_factory(method=method, padding_side=padding_side, **({"prompt": prompt} if prompt else {}))
    originals = sample_texts[:4]
    texts, of = perturbed_family(originals)
    plan = encoder.plan(COMBOS)  # EOS pooling among them: the appended EOS runs
    items = encoder.prepare(texts, allow_empty=True)
    counter = token_passes(encoder.loaded)
    with torch.inference_mode():
        references = encoder.references(encoder.prepare(originals), plan, [False])
        before = counter.snapshot()
        shared = encoder.forward_shared(items, plan, [False], (references, of))
        reused = {group[0]: (group, states[False]) for group, states in shared}
        run = counter.since(before)
        full = encoder.with_setting(prefix_reuse=False)
        whole = {group[0]: (group, states[False]) for group, states in full.forward_shared(items, plan, [False])}
    for pooling in plan.poolings:
        on, off = np.zeros((len(items), encoder.dim)), np.zeros((len(items), encoder.dim))
        for group, states in reused.values():
            on[group] = pooling(states).numpy()
        for group, states in whole.values():
            off[group] = pooling(states).numpy()
        np.testing.assert_allclose(on, off, atol=ATOL, rtol=0, err_msg=str((pooling.mode, pooling.layer)))
    against_originals = sum(
        len(item.input_ids) - references.reuse(item.input_ids, ref, reuse_limit(encoder.method, item.placeholder_index))
        for item, ref in zip(items, of, strict=True)
    )
    if method == "tp:1-3":  # reuse stops at the placeholder, before the text: the template's prefix only
        assert run == against_originals
    else:  # the texts share more with each other than with their originals
        assert run < against_originals
    if method == "plain":  # nothing limits reuse: each family's trie outside its reference, once
        expected = sum(
            least_run([items[i].input_ids for i in range(len(items)) if of[i] == ref], references.ids[ref])
            for ref in set(of)
        )
        assert run == expected


def test_a_family_on_the_shared_trunk_and_its_kept_states(tiny_model_dir, tmp_path_factory, sample_texts):
    """Base and adapter together through a family (an adapter on the top layer only); a wave's parents' kept
    states are their full forwards' (the vectors of their children would differ otherwise)."""
    from core.encoding.encoder import Encoder
    from tests.unit.encoding.test_encoder_pair import _adapter

    folder = _adapter(tiny_model_dir, tmp_path_factory.mktemp("adapter"), [TINY_LAYERS - 1])
    encoder = Encoder(str(tiny_model_dir), folder, precision="fp32", cache=False, prompt="eol", pooling="mean")
    originals = sample_texts[:3]
    texts, of = perturbed_family(originals)
    plan = encoder.plan()
    items = [without_appended_eos(item) for item in encoder.prepare(texts, allow_empty=True)]  # mean: no EOS read
    with torch.inference_mode():
        references = encoder.references(encoder.prepare(originals), plan, [False, True])
        on = {flag: np.zeros((len(items), encoder.dim)) for flag in (False, True)}
        for group, states in encoder.forward_shared(items, plan, [False, True], (references, of)):
            for flag in on:
                on[flag][group] = plan.poolings[0](states[flag]).numpy()
        for flag in on:
            alone = encoder.with_setting(prefix_reuse=False)
            off = np.zeros_like(on[flag])
            for group, states in alone.forward_shared(items, plan, [flag]):
                off[group] = plan.poolings[0](states[flag]).numpy()
            np.testing.assert_allclose(on[flag], off, atol=ATOL, rtol=0)
    waves = {step.wave for ref in set(of) for step in plan_reuse(
        [items[i].input_ids for i in range(len(items)) if of[i] == ref], references.ids[ref])}  # fmt: skip
    assert max(waves) >= 2  # some texts read a parent that is not their original


def test_select_references_gathers_rows_of_several_sources(tiny_encoder_factory, sample_texts):
    encoder = tiny_encoder_factory(prompt="eol", pooling="mean")
    plan = encoder.plan()
    with torch.inference_mode():
        first = encoder.references(encoder.prepare(sample_texts[:2]), plan, [False])
        second = encoder.references(encoder.prepare(sample_texts[2:5]), plan, [False])
        picked = select_references([(second, 2), (first, 0), (second, 0)])
    assert picked.ids == (second.ids[2], first.ids[0], second.ids[0])
    for row, (source, ref) in enumerate([(second, 2), (first, 0), (second, 0)]):
        n = int(source.lengths[ref])
        assert int(picked.lengths[row]) == n
        for (k, v), (k0, v0) in zip(picked.past[False], source.past[False], strict=True):
            np.testing.assert_array_equal(k[row, :, :n], k0[ref, :, :n])
            np.testing.assert_array_equal(v[row, :, :n], v0[ref, :, :n])
        for index, states in picked.hidden[False].items():
            np.testing.assert_array_equal(states[row, :n], source.hidden[False][index][ref, :n])


@pytest.mark.parametrize("method", ["plain", "echo", "tp:1-3"])
def test_leaving_out_the_appended_eos_keeps_every_other_pooling(tiny_encoder_factory, sample_texts, method):
    """The grid runs without the appended EOS (no pooling reads it); a forward with it gives the same vectors."""
    encoder = tiny_encoder_factory(
        method=method, prefix_reuse=False, **({"prompt": "eol"} if method == "plain" else {})
    )
    combos = [*(combo for combo in COMBOS if combo[0] != "eos"), ("attention", -1)]
    plan = encoder.plan(combos)
    assert not plan.reads_appended_eos and encoder.plan([("eos", -1)]).reads_appended_eos
    grid = encoder.encode_grid(sample_texts, combos)[encoder.use_adapter]
    items = encoder.prepare(sample_texts)
    assert any(without_appended_eos(item) != item for item in items)
    with torch.inference_mode():
        states = encoder.forward(encoder.collate(items), plan)  # the appended EOS runs
    for pooling in plan.poolings:
        np.testing.assert_allclose(
            grid[(pooling.mode, str(pooling.layer))], pooling(states).numpy(), atol=ATOL, rtol=0, err_msg=pooling.mode
        )
