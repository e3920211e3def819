from __future__ import annotations

import numpy as np
import pytest

from analysis.attribution import token_pairs as pair_attribution
from analysis.attribution.token_pairs import compare_pair_matrices, pair_matrix
from analysis.plots import pair_matrix_figure
from core.encoding.encoder import Encoder
from core.models.registry import load_model
from core.runtime.errors import ConfigError

TEXT_A = "The red dog runs in the garden."
TEXT_B = "A cat sleeps near the river."


@pytest.fixture(scope="module")
def encoder(tiny_model_dir, tiny_adapter_dir) -> Encoder:
    loaded = load_model(str(tiny_model_dir), tiny_adapter_dir)
    return Encoder(loaded, prompt="eol", pooling="last", cache=False, precision="fp32")


def test_the_matrix_is_complete_and_settles_as_the_staircase_gets_finer(encoder):
    pair_attribution._CACHE.clear()
    matrices = {steps: pair_matrix(encoder, TEXT_A, TEXT_B, use_adapter=False, steps=steps) for steps in (1, 2, 8, 16)}
    for result in matrices.values():
        change = result.similarity - result.baseline_similarity
        assert abs(change) > 1e-3
        assert result.error < 1e-6 * max(1.0, abs(change))  # the staircase telescopes: rounding only
        assert result.matrix.shape == (len(result.tokens_a), len(result.tokens_b))
    assert "".join(matrices[16].tokens_a).strip('" ') == TEXT_A  # the text's own tokens, no prompt

    def gap(a: int, b: int) -> float:
        return float(np.abs(matrices[a].matrix - matrices[b].matrix).max())

    assert gap(8, 16) < gap(1, 2)  # finer stages approach the straight path: the matrix settles
    assert matrices[1].similarity == pytest.approx(matrices[16].similarity, abs=1e-6)


def test_text_paths_are_cached_and_top_pairs_read_as_a_sentence(encoder):
    pair_attribution._CACHE.clear()
    first = pair_matrix(encoder, TEXT_A, TEXT_B, use_adapter=True, steps=2)
    assert len(pair_attribution._CACHE) == 2
    again = pair_matrix(encoder, TEXT_A, "A cat.", use_adapter=True, steps=2)
    assert len(pair_attribution._CACHE) == 3  # A's path reused
    assert again.tokens_a == first.tokens_a
    sentence = first.top_pairs(5)
    assert sentence.startswith("Cosine ") and sentence.count(" with ") >= 5
    with pytest.raises(ConfigError):
        first.top_pairs(0)


def test_base_and_adapter_matrices_and_their_figure(encoder):
    matrices = compare_pair_matrices(encoder, TEXT_A, TEXT_B, steps=2)
    assert set(matrices) == {"base", "adapter"}
    assert not np.allclose(matrices["base"].matrix, matrices["adapter"].matrix)
    figure = pair_matrix_figure({k: v.to_dict() for k, v in matrices.items()}, "pair")
    assert len(figure.data) == 3  # base, adapter, difference


def test_bad_steps_are_refused(encoder):
    with pytest.raises(ConfigError):
        pair_matrix(encoder, TEXT_A, TEXT_B, use_adapter=False, steps=0)


def test_bench_times_the_pair_matrix_base_and_adapter_then_with_text_a_cached(tiny_model_dir, tiny_adapter_dir, capsys):
    from core.bench.cli import main as bench

    assert bench(["--model", str(tiny_model_dir), "--pair-matrix", str(tiny_adapter_dir), "--precision", "fp32"]) == 0
    printed = capsys.readouterr().out
    for label in ("base", "adapter"):
        line = next(line for line in printed.splitlines() if line.startswith(label))
        assert "tokens in" in line and "completeness error" in line and "with A cached" in line
    assert "peak RSS" in printed
