"""The prefix bench's perturbed case encodes against the originals with the vectors of full forwards."""

from __future__ import annotations

import numpy as np

from core.bench.prefix import _one_word_removed, encode_against


def test_perturbed_case_equals_full_forwards_with_fewer_token_passes(tiny_encoder_factory, sample_texts):
    encoder = tiny_encoder_factory(prompt="eol", pooling="mean")
    originals = sample_texts[:2]
    texts, of = [], []
    for index, text in enumerate(originals):
        removed = _one_word_removed(text)
        texts += removed
        of += [index] * len(removed)
    assert texts and all(len(t.split()) == len(originals[i].split()) - 1 for t, i in zip(texts, of, strict=True))
    counter = encoder.token_passes
    before = counter.snapshot()
    reused = encode_against(encoder, texts, originals, of)
    with_reuse = counter.since(before)
    before = counter.snapshot()
    full = encode_against(encoder.with_setting(prefix_reuse=False), texts, originals, of)
    assert with_reuse < counter.since(before)
    np.testing.assert_allclose(reused, full, atol=1e-5, rtol=0)
