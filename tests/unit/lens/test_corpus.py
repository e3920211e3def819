"""The batched corpus lens equals the per-layer reference (``project``) exactly; shared layers are read once."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import analysis.lens.corpus as corpus
from analysis.lens.corpus import LENS_VIEWS, RANK_CAP, lens_corpora, lens_corpus
from analysis.lens.vocabulary import LensHead, alignment_measures, exact_topk, first_component, project

VOCAB, HIDDEN, TEXTS, LAYERS = 30_000, 12, 9, 3  # enough blocks (30000 / 128) for the block-max top-k path


@pytest.mark.parametrize("vocab", [4_000, 4_007])  # whole blocks, and a tail beyond them
def test_exact_topk_equals_torch_topk(vocab):
    torch.manual_seed(0)
    logits = torch.randn(6, vocab)
    logits[0, :50] = 5.0 + torch.arange(50.0)  # the whole top-k in the first blocks
    logits[1, -3:] = 100.0 + torch.arange(3.0)  # the top in the tail (distinct: tie order is unspecified)
    values, ids = exact_topk(logits, 7, block=16)
    expected = torch.topk(logits, 7, dim=1)
    torch.testing.assert_close(values, expected.values, rtol=0, atol=0)
    torch.testing.assert_close(ids, expected.indices, rtol=0, atol=0)


@pytest.fixture(scope="module")
def head() -> LensHead:
    torch.manual_seed(3)
    norm = torch.nn.LayerNorm(HIDDEN)
    return LensHead(norm=norm, weight=torch.randn(VOCAB, HIDDEN), bias=None, softcap=None)


def random_layers(seed: int) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {layer: (rng.normal(size=(TEXTS, HIDDEN)) + layer).astype(np.float32) for layer in range(LAYERS)}


def reference(head: LensHead, by_layer, final: int, targets, top_k: int) -> dict:
    """The lens as separate ``project`` calls per layer: the definition the batched path must equal."""
    out = {view: {"ranks": [], "top": []} for view in LENS_VIEWS}
    for layer in sorted(by_layer):
        normed = head.normed(torch.as_tensor(by_layer[layer]), already_normed=layer == final)
        component = first_component(normed.numpy())
        projections = project(head, normed, top_k=top_k, targets=targets, removals=(None, component), rank_cap=RANK_CAP)
        for view, projection in zip(LENS_VIEWS, projections, strict=True):
            out[view]["ranks"].append(projection.target_ranks)
            out[view]["top"].append(projection)
    return out


def test_corpus_lens_equals_per_layer_projections(head):
    by_layer = random_layers(0)
    rng = np.random.default_rng(1)
    targets = [list(rng.choice(VOCAB, size=int(rng.integers(0, 6)), replace=False)) for _ in range(TEXTS)]
    targets[0] = []  # a text without content tokens
    top_k, final = 5, LAYERS - 1
    # Targets the lens ranks high: each text's own top tokens at layer 1, so ranks below the cap are exercised.
    expected = reference(head, by_layer, final, targets, top_k)
    targets[1] = [int(t) for t in expected["raw"]["top"][1].top_ids[1, [0, 3]]] + targets[1]
    expected = reference(head, by_layer, final, targets, top_k)
    lens = lens_corpus(head, by_layer, final, targets, top_k=top_k, examples=2, chunk_rows=4)
    for view in LENS_VIEWS:
        for column in range(LAYERS):
            ranks = expected[view]["ranks"][column]
            projection = expected[view]["top"][column]
            for name, values in alignment_measures(ranks, top_k).items():
                np.testing.assert_array_equal(lens.measures[view][name][:, column], values)
            np.testing.assert_array_equal(lens.top1[view][:, column], projection.top_ids[:, 0])
            np.testing.assert_array_equal(lens.example_ids[view][:, column], projection.top_ids[:2])
            np.testing.assert_allclose(lens.example_probs[view][:, column], projection.top_probs[:2], rtol=1e-5)
    assert lens.measures["raw"]["best_rank"][1, 1] == 0 and lens.measures["raw"]["hits"][1, 1] >= 2
    final_projection = expected["raw"]["top"][final]
    np.testing.assert_array_equal(lens.final_top_ids, final_projection.top_ids)
    np.testing.assert_allclose(lens.final_top_probs, final_projection.top_probs, rtol=1e-5)
    for column in range(LAYERS):
        normed = head.normed(torch.as_tensor(by_layer[column]), already_normed=column == final)
        np.testing.assert_allclose(lens.components[column], first_component(normed.numpy()), rtol=1e-6)


def test_identical_layers_of_two_variants_are_read_once(head, monkeypatch):
    base = random_layers(0)
    adapter = {layer: v if layer < 2 else v + 1.0 for layer, v in base.items()}  # shared below layer 2
    targets = [[1, 2, 3]] * TEXTS
    calls = []
    original = corpus._lens_block
    monkeypatch.setattr(corpus, "_lens_block", lambda *a, **k: calls.append(1) or original(*a, **k))
    lenses = lens_corpora(head, {"base": base, "adapter": adapter}, LAYERS - 1, targets, top_k=4)
    assert len(calls) == LAYERS + 1  # every base layer, and the adapter's one changed layer
    monkeypatch.setattr(corpus, "_lens_block", original)
    alone = lens_corpus(head, adapter, LAYERS - 1, targets, top_k=4)
    for view in LENS_VIEWS:
        np.testing.assert_array_equal(lenses["adapter"].measures[view]["best_rank"], alone.measures[view]["best_rank"])
        np.testing.assert_array_equal(lenses["adapter"].top1[view], alone.top1[view])
    assert not np.array_equal(lenses["base"].top1["raw"][:, 2], lenses["adapter"].top1["raw"][:, 2])


def test_variants_must_cover_the_same_layers(head):
    with pytest.raises(ValueError, match="same hidden states"):
        lens_corpora(head, {"base": random_layers(0), "adapter": {0: random_layers(0)[0]}}, 2, [[1]] * TEXTS, top_k=3)


def test_profile_scores_shared_layers_once_with_the_same_values(monkeypatch):
    import analysis.lens.profile as profile

    rng = np.random.default_rng(0)
    labels = ["a", "b", "c"] * 10
    base = {("last", i): rng.normal(size=(30, 8)) + np.repeat(np.eye(3, 8), 10, 0) * 3 for i in range(3)}
    adapter = {key: v if key[1] < 2 else v * 1.5 + 0.1 for key, v in base.items()}
    pairs = {("last", i): rng.normal(size=(10, 8)) for i in range(3)}
    pair_grid = {"base": pairs, "adapter": dict(pairs)}
    calls = []
    original = profile._layer_values
    monkeypatch.setattr(profile, "_layer_values", lambda *a, **k: calls.append(1) or original(*a, **k))
    shared = profile.layer_profile({"base": base, "adapter": adapter}, labels, pair_grid, ["last"], 3, [42])
    assert len(calls) == 3 + 1
    monkeypatch.setattr(profile, "_layer_values", original)
    alone = profile.layer_profile({"adapter": adapter}, labels, {"adapter": pairs}, ["last"], 3, [42])
    assert shared["variants"]["adapter"] == alone["variants"]["adapter"]
    rows = shared["variants"]["adapter"]["poolings"]["last"]
    assert rows["anisotropy"][2] != shared["variants"]["base"]["poolings"]["last"]["anisotropy"][2]
