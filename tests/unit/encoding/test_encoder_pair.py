"""Base and adapter vectors from one shared trunk equal two separate passes."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TINY_LAYERS


def pair(grids: dict) -> tuple[dict, dict]:
    """(base, adapter) grids of an ``encode_grid(..., variants=(False, True))`` result."""
    return grids[False], grids[True]


def pair_vectors(encoder, texts, **options) -> tuple[np.ndarray, np.ndarray]:
    """(base, adapter) vectors of ``texts`` under the encoder's setting, from one shared-trunk call."""
    grids = encoder.encode_grid(texts, variants=(False, True), **options)
    return next(iter(grids[False].values())), next(iter(grids[True].values()))


def _adapter(model_dir: Path, folder: Path, layers: list[int] | None, seed: int = 5) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "v_proj", "down_proj"],
        layers_to_transform=layers,
        init_lora_weights=False,
    )
    get_peft_model(model, config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def top_layer_encoder(tiny_model_dir, tmp_path_factory):
    from core.encoding.encoder import Encoder

    folder = _adapter(tiny_model_dir, tmp_path_factory.mktemp("top-adapter"), [TINY_LAYERS - 1])
    return Encoder(str(tiny_model_dir), folder, precision="fp32", cache=False, prompt="eol", pooling="last")


def test_adapter_free_layers(top_layer_encoder, tiny_model_dir, tiny_adapter_dir, tiny_loaded):
    from core.models.registry import load_model

    assert top_layer_encoder.loaded.adapter_free_layers == TINY_LAYERS - 1
    assert load_model(str(tiny_model_dir), tiny_adapter_dir).adapter_free_layers == 0  # every layer
    assert tiny_loaded.adapter_free_layers == 0  # no adapter


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_pair_equals_two_passes(top_layer_encoder, sample_texts, padding_side):
    encoder = top_layer_encoder.with_setting(padding_side=padding_side)
    combos = [("last", -1), ("mean", -1), ("mean", "last2"), ("eos", 1), ("attention", -1), ("weighted", -2)]
    base, tuned = pair(encoder.encode_grid(sample_texts, combos, variants=(False, True)))
    alone_base = encoder.encode_grid(sample_texts, combos, variants=(False,))[False]
    alone_tuned = encoder.encode_grid(sample_texts, combos, variants=(True,))[True]
    for combo in alone_base:
        np.testing.assert_allclose(base[combo], alone_base[combo], atol=1e-5, rtol=0)
        np.testing.assert_allclose(tuned[combo], alone_tuned[combo], atol=1e-5, rtol=0)
    # The adapter changes the top layer's output, so the pair did not return base twice.
    assert np.abs(tuned[("last", "-1")] - base[("last", "-1")]).max() > 1e-3
    np.testing.assert_array_equal(tuned[("eos", "1")], base[("eos", "1")])  # below the adapter: shared


def test_pair_runs_the_lower_layers_once(top_layer_encoder, sample_texts, forward_counter):
    encoder = top_layer_encoder.with_setting(prefix_reuse=False)  # one forward per batch (no prefix pass)
    layers = encoder.loaded.backbone.layers
    with forward_counter(layers[0]) as bottom, forward_counter(layers[-1]) as top:
        pair_vectors(encoder, sample_texts)
    batches = len(encoder.batches(encoder.prepare(sample_texts)))
    assert (bottom.calls, top.calls) == (batches, 2 * batches)


def test_pair_with_adapter_everywhere_falls_back_to_two_passes(tiny_encoder_factory, tiny_adapter_dir, sample_texts):
    encoder = tiny_encoder_factory(adapter=tiny_adapter_dir)
    base, tuned = pair_vectors(encoder, sample_texts, normalize=True)
    np.testing.assert_allclose(base, encoder.encode(sample_texts, use_adapter=False, normalize=True), atol=1e-6)
    np.testing.assert_allclose(tuned, encoder.encode(sample_texts, use_adapter=True, normalize=True), atol=1e-6)


def test_pair_needs_an_adapter(tiny_encoder, sample_texts):
    from core.runtime.errors import ConfigError

    with pytest.raises(ConfigError, match="No adapter is attached"):
        pair_vectors(tiny_encoder, sample_texts)


def test_pair_uses_and_fills_the_cache(tiny_model_dir, tmp_path, sample_texts):
    from core.encoding.encoder import Encoder

    folder = _adapter(tiny_model_dir, tmp_path / "adapter", [TINY_LAYERS - 1])
    encoder = Encoder(str(tiny_model_dir), folder, precision="fp32", cache=tmp_path / "cache.sqlite")
    base, tuned = pair_vectors(encoder, sample_texts)
    np.testing.assert_array_equal(encoder.encode(sample_texts, use_adapter=False), base)
    np.testing.assert_array_equal(encoder.encode(sample_texts, use_adapter=True), tuned)


def test_pair_with_one_side_cached_runs_only_the_other(top_layer_encoder, tmp_path, sample_texts, forward_counter):
    """Base vectors in the cache: the pair runs the adapter alone (one pass), not the shared pair again."""
    from core.encoding.cache import EmbeddingCache

    encoder = copy.copy(top_layer_encoder.with_setting(prefix_reuse=False))  # one forward per batch
    encoder.cache = EmbeddingCache(tmp_path / "cache.sqlite")
    base = encoder.encode(sample_texts[:4], use_adapter=False)
    layers = encoder.loaded.backbone.layers
    with forward_counter(layers[0]) as bottom, forward_counter(layers[-1]) as top:
        pair_base, pair_tuned = pair_vectors(encoder, sample_texts)
    # Texts 0-3: adapter alone; the rest: base and adapter from one trunk.
    alone = len(encoder.batches(encoder.prepare(sample_texts[:4])))
    shared = len(encoder.batches(encoder.prepare(sample_texts[4:])))
    assert (bottom.calls, top.calls) == (alone + shared, alone + 2 * shared)
    np.testing.assert_array_equal(pair_base[:4], base)
    np.testing.assert_allclose(pair_base, top_layer_encoder.encode(sample_texts, use_adapter=False), atol=1e-5)
    np.testing.assert_allclose(pair_tuned, top_layer_encoder.encode(sample_texts, use_adapter=True), atol=1e-5)


@pytest.mark.parametrize("method", ["echo", "tp:1-3", "tp:0-1", "ensemble:eol+summarize"])
def test_pair_keeps_the_method(top_layer_encoder, sample_texts, method):
    """Echo's pooled span, token prepending's hooks (below and inside the adapter's layers) and an ensemble's
    average carry over to the shared trunk: equal to two separate passes with the method."""
    encoder = top_layer_encoder.with_setting(method=method)
    combos = [("mean", -1), ("last", -1), ("mean", 2)]
    base, tuned = pair(encoder.encode_grid(sample_texts, combos, variants=(False, True)))
    for use_adapter, shared in ((False, base), (True, tuned)):
        alone = encoder.encode_grid(sample_texts, combos, variants=(use_adapter,))[use_adapter]
        for combo in alone:
            np.testing.assert_allclose(shared[combo], alone[combo], atol=1e-5, rtol=0)
    plain = top_layer_encoder.with_setting(method="plain").encode_grid(sample_texts, combos, variants=(True,))[True]
    assert np.abs(plain[("mean", "-1")] - tuned[("mean", "-1")]).max() > 1e-3  # the method did change the vectors


def test_faithfulness_encodes_perturbed_texts_for_both_settings_in_one_pass(top_layer_encoder):
    from analysis.faithfulness.perturbation import pooled_vectors

    texts = ["The red dog runs in the garden.", "", "dog garden", "An old man walks slowly."]
    both = pooled_vectors(top_layer_encoder, texts, [False, True])
    for flag in (False, True):
        alone = pooled_vectors(top_layer_encoder, texts, [flag])[flag]
        np.testing.assert_allclose(both[flag], alone, rtol=1e-5, atol=1e-6)
    assert not np.allclose(both[False], both[True])  # the adapter changes the vectors


def test_forward_switches_the_adapter_and_forward_variants_equals_it(top_layer_encoder, sample_texts):
    import torch

    encoder = top_layer_encoder
    batch = encoder.collate(encoder.prepare(sample_texts))
    plan = encoder.plan([("mean", -1), ("last", 2)])
    with torch.inference_mode():
        both = encoder.forward_variants(batch, plan, (False, True))
        for flag in (False, True):
            alone = encoder.forward(batch, plan, use_adapter=flag)
            for pooling in plan.poolings:
                np.testing.assert_allclose(pooling(both[flag]).numpy(), pooling(alone).numpy(), atol=1e-5, rtol=0)
        pooled = plan.poolings[0]
        assert np.abs(pooled(both[False]).numpy() - pooled(both[True]).numpy()).max() > 1e-4  # the switch matters


def test_threads_sharing_one_model_get_their_own_vectors(top_layer_encoder):
    """The workbench serves one cached model to every browser session: two threads encoding at once (the shared
    trunk's recording hooks, the adapter switch) must each get the vectors they would get alone."""
    import threading

    short = [f"text {i}" for i in range(6)]
    long = [f"a much longer text number {i} " * 6 for i in range(6)]
    alone = {name: pair_vectors(top_layer_encoder, texts) for name, texts in (("short", short), ("long", long))}
    plain = top_layer_encoder.encode(long, use_adapter=False)
    start = threading.Barrier(3)
    faults: list[str] = []

    def encode_pairs(name: str, texts: list[str]) -> None:
        start.wait()
        for _ in range(15):
            try:
                base, adapter = pair_vectors(top_layer_encoder, texts)
            except Exception as error:  # a fault in one thread is this test's finding, not a crash of the run
                faults.append(f"{name}: {type(error).__name__}: {error}")
                return
            if not (np.allclose(base, alone[name][0], atol=1e-5) and np.allclose(adapter, alone[name][1], atol=1e-5)):
                faults.append(f"{name}: vectors differ from the single-thread ones")
                return

    def encode_base() -> None:
        start.wait()
        for _ in range(15):
            if not np.allclose(top_layer_encoder.encode(long, use_adapter=False), plain, atol=1e-5):
                faults.append("base: vectors differ from the single-thread ones")
                return

    threads = [threading.Thread(target=encode_pairs, args=("short", short)),
               threading.Thread(target=encode_pairs, args=("long", long)),
               threading.Thread(target=encode_base)]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not faults, faults
