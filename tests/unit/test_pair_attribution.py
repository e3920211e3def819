from __future__ import annotations

import numpy as np
import pytest

from analysis import pair_attribution
from analysis.pair_attribution import compare_pair_matrices, pair_matrix
from analysis.plots import pair_matrix_figure
from core.encoder import Encoder
from core.errors import ConfigError
from core.models import load_model

TEXT_A = "The red dog runs in the garden."
TEXT_B = "A cat sleeps near the river."


@pytest.fixture(scope="module")
def encoder(tiny_model_dir, tiny_adapter_dir) -> Encoder:
    loaded = load_model(str(tiny_model_dir), tiny_adapter_dir)
    return Encoder(loaded, prompt="eol", pooling="last", cache=False, precision="fp32")


def test_completeness_error_shrinks_to_small_with_enough_steps(encoder):
    pair_attribution._CACHE.clear()
    coarse = pair_matrix(encoder, TEXT_A, TEXT_B, use_adapter=False, steps=1)
    fine = pair_matrix(encoder, TEXT_A, TEXT_B, use_adapter=False, steps=16)
    change = abs(fine.similarity - fine.baseline_similarity)
    assert fine.error < coarse.error
    assert fine.error < 0.02 * max(change, 1e-3)
    assert fine.matrix.shape == (len(fine.tokens_a), len(fine.tokens_b))
    assert "".join(fine.tokens_a).strip('" ') == TEXT_A  # the text's own tokens, no prompt


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
