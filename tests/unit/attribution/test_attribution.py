"""Integrated gradients on the tiny model: completeness, convergence control, similarity, agreement."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis.attention import capture_corpus
from analysis.attribution.integrated_gradients import Attribution, Attributor, agreement, compare_similarity
from core.encoding.encoder import Encoder
from core.models.registry import load_model

TEXT = "a man is driving a car"
OTHER = "The red dog runs quickly in the garden."


@pytest.fixture(scope="module")
def encoder(tiny_model_dir, tmp_path_factory) -> Encoder:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(2)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="eager")
    config = LoraConfig(r=4, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    adapter = Path(tmp_path_factory.mktemp("adapter"))
    get_peft_model(model, config).save_pretrained(adapter)
    loaded = load_model(str(tiny_model_dir), adapter)
    return Encoder(loaded, prompt="cluster", pooling="last", cache=False, precision="fp32")


@pytest.mark.parametrize("use_adapter", [False, True])
def test_pooled_path_matches_the_encoder(encoder, use_adapter):
    vector = Attributor(encoder).pooled(TEXT, use_adapter).numpy()
    np.testing.assert_allclose(vector, encoder.encode([TEXT], use_adapter=use_adapter)[0], atol=1e-5)


def test_token_shares_are_complete_and_converged(encoder):
    result = Attributor(encoder).token_shares(TEXT, use_adapter=True)
    norm = float(np.linalg.norm(encoder.encode([TEXT], use_adapter=True)[0]))
    assert result.target == pytest.approx(norm, rel=1e-5)
    assert result.scores.sum() == pytest.approx(result.target - result.reference - result.delta, abs=1e-4)
    assert result.relative_delta < 0.05 and result.steps == 16  # one segment suffices on the tiny model
    assert result.shares.sum() == pytest.approx(1.0)
    assert result.scores[0] == 0.0  # the sink keeps its embedding on the path
    assert result.scores[-1] == 0.0  # the appended EOS comes after the pooled token: no influence
    assert len(result.tokens) == len(result.categories) == len(result.scores)


def test_many_texts_batched_equal_each_alone(encoder):
    attributor = Attributor(encoder, n_steps=4, max_steps=64)
    texts = [TEXT, OTHER, "city lights"]
    together = attributor.token_shares_many(texts, use_adapter=True)
    for text, batched in zip(texts, together, strict=True):
        alone = attributor.token_shares(text, use_adapter=True)
        assert batched.tokens == alone.tokens and batched.steps == alone.steps
        np.testing.assert_allclose(batched.scores, alone.scores, atol=1e-5)
        assert batched.relative_delta < 0.05


def test_base_and_adapter_attributions_differ(encoder):
    attributor = Attributor(encoder)
    base, adapter = attributor.token_shares(TEXT, False), attributor.token_shares(TEXT, True)
    assert np.abs(base.scores - adapter.scores).max() > 1e-3


def test_segments_split_until_converged_then_warn_at_the_cap(encoder):
    attributor = Attributor(encoder, n_steps=4, max_steps=16, tolerance=1e-12)
    with pytest.warns(UserWarning, match="did not converge.*cap of 16 steps"):
        result = attributor.token_shares(TEXT, use_adapter=False, baseline="zero")
    assert 8 <= result.steps <= 16  # split at least once, never past the cap
    assert result.scores.sum() == pytest.approx(result.target - result.reference - result.delta, abs=1e-4)
    converging = Attributor(encoder, n_steps=4, max_steps=256, tolerance=0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = converging.token_shares(TEXT, use_adapter=False, baseline="zero")
    assert result.relative_delta < 0.05 and result.steps > 4  # a zero baseline needs more steps


def test_a_halved_segment_runs_one_forward_for_its_midpoint_beyond_its_steps(encoder):
    """The completeness gaps read f at path points already run: the direction, f(text) and f(baseline) once, each
    step once, and one forward per split (its midpoint), not captum's two endpoint forwards per segment."""
    attributor = Attributor(encoder, n_steps=4, max_steps=64, tolerance=1e-3)
    tokens = len(attributor.collate([TEXT]).tokens[0])
    before = encoder.token_passes.snapshot()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the cap may be reached; the count is what is tested
        result = attributor.token_shares(TEXT, use_adapter=False, baseline="zero")
    segments = result.steps // attributor.n_steps
    assert segments > 1  # it split
    splits = (segments - 1) // 2
    assert encoder.token_passes.since(before) == tokens * (3 + result.steps + splits)


def test_similarity_attributes_each_side_with_the_prompt_kept(encoder):
    result = Attributor(encoder).similarity(TEXT, OTHER, use_adapter=True)
    a, b = encoder.encode([TEXT, OTHER], use_adapter=True, normalize=True)
    assert result.cosine == pytest.approx(float(a @ b), abs=1e-5)
    assert result.a.target == pytest.approx(result.cosine, abs=1e-5)
    for side in (result.a, result.b):
        assert side.relative_delta < 0.05
        prompt = [i for i, c in enumerate(side.categories) if c in ("sink", "prompt", "special")]
        assert np.all(side.scores[prompt] == 0)  # 'text' baseline: only the text's tokens move
    assert result.to_dict()["a"]["quantity"] == "cosine to text B"


def test_unknown_baseline_is_refused(encoder):
    with pytest.raises(ValueError, match="Unknown baseline 'ones'; choose one of: pad, text, zero"):
        Attributor(encoder).token_shares(TEXT, False, baseline="ones")  # type: ignore[arg-type]


def test_agreement_of_attention_with_attribution(encoder):
    corpus = capture_corpus(encoder, [TEXT, OTHER], use_adapter=False)
    # Attribution shares equal to the attention row itself must agree perfectly.
    fake = []
    for item in corpus.items:
        scores = np.append(item.weights(-1), 0.0)  # one more token (the EOS) than the attention keys
        fake.append(Attribution("", item.tokens, [], scores, 1.0, 0.0, 0.0, 8, "x", "pad"))
    result = agreement(corpus.items, fake)
    assert result["per_text_rho"] == [1.0, 1.0] and result["mean_rho"] == 1.0
    real = [Attributor(encoder).token_shares(t, False) for t in (TEXT, OTHER)]
    measured = agreement(corpus.items, real)
    assert -1.0 <= measured["mean_rho"] <= 1.0 and len(measured["per_text_rho"]) == 2
    with pytest.raises(ValueError, match="2 attention rows but 1 attributions"):
        agreement(corpus.items, real[:1])


def test_compare_similarity_attributes_base_and_adapter(encoder):
    comparison = compare_similarity(encoder, TEXT, OTHER, max_steps=64)
    assert set(comparison.results) == {"base", "adapter"} and comparison.seconds > 0
    for label, use_adapter in (("base", False), ("adapter", True)):
        a, b = encoder.encode([TEXT, OTHER], use_adapter=use_adapter, normalize=True)
        assert comparison.results[label].cosine == pytest.approx(float(a @ b), abs=1e-5)
    bars = comparison.bars("b")
    assert set(bars) == {"base", "adapter"} and bars["adapter"]["quantity"] == "cosine to text A"
    assert bars["base"]["scores"] == comparison.results["base"].b.to_dict()["scores"]


def test_compare_similarity_reports_progress_and_stops_between_segments(encoder):
    reports: list[tuple[int, int]] = []
    compare_similarity(encoder, TEXT, OTHER, max_steps=32, progress=lambda done, total: reports.append((done, total)))
    assert reports[0] == (0, 128) and reports[-1] == (128, 128)  # 2 texts x base and adapter x cap 32
    assert [done for done, _ in reports] == sorted(done for done, _ in reports)  # never backwards

    class Stopped(Exception):
        pass

    calls = []
    flags = [p.requires_grad for p in encoder.loaded.model.parameters()]

    def stop_after_first_segment(done: int, total: int) -> None:
        calls.append(done)
        if done > 0:
            raise Stopped

    with pytest.raises(Stopped):
        compare_similarity(encoder, TEXT, OTHER, max_steps=64, progress=stop_after_first_segment)
    assert calls == [0, 16]  # one segment of 16 steps ran, then nothing more
    # Stopped mid-attribution, the model is as before: gradients back on where they were, the adapter enabled.
    assert [p.requires_grad for p in encoder.loaded.model.parameters()] == flags
    with torch.no_grad():
        again = compare_similarity(encoder, TEXT, OTHER, max_steps=32).results["adapter"].cosine
    a, b = encoder.encode([TEXT, OTHER], use_adapter=True, normalize=True)
    assert again == pytest.approx(float(a @ b), abs=1e-5)
