"""The faithfulness report with prefix reuse (perturbed texts against their originals) measures what full forwards
measure, with fewer token-passes; the page's one-text curves too."""

from __future__ import annotations

import numpy as np

from analysis.faithfulness.config import FaithfulnessConfig
from analysis.faithfulness.perturbation import content_text, pooled_vectors, variants
from analysis.faithfulness.report import run_report, text_curves
from tests.unit.faithfulness.test_faithfulness import SAMPLE, config, encoder  # noqa: F401 (fixture)

MEASURED = ("deletion", "insertion", "sim_deletion", "sim_insertion")


def test_the_report_is_the_same_with_and_without_reuse(encoder, tmp_path):  # noqa: F811
    methods = ("attention_last", "gradient_x_input", "random")
    reused = run_report(config(tmp_path / "on", methods=methods), encoder, SAMPLE)
    full = run_report(config(tmp_path / "off", methods=methods), encoder.with_setting(prefix_reuse=False), SAMPLE)
    for label in ("base", "adapter"):
        for method in methods:
            on, off = reused[label]["methods"][method], full[label]["methods"][method]
            for measure in MEASURED:
                np.testing.assert_allclose(
                    on["curves"][measure]["mean"], off["curves"][measure]["mean"], atol=1e-5, rtol=0
                )
                assert abs(on[f"aopc_{measure}"]["mean"] - off[f"aopc_{measure}"]["mean"]) < 1e-5
    assert reused["speed"]["prefix_reuse"] and not full["speed"]["prefix_reuse"]
    assert 0 < reused["speed"]["token_passes"] < full["speed"]["token_passes"]
    assert 0 < reused["speed"]["sample_token_passes"] < full["speed"]["sample_token_passes"]


def test_perturbed_vectors_against_their_originals_equal_full_ones(encoder):  # noqa: F811
    texts = [content_text(encoder, text) for _, text in SAMPLE[:3]]
    perturbed, of = [], []
    for index, text in enumerate(texts):
        order = list(range(len(text.positions)))[::-1]
        deletion, insertion = variants(text, order, min(3, len(order)))
        perturbed += [*deletion, *insertion]
        of += [index] * (len(deletion) + len(insertion))
    references = encoder.references([text.item for text in texts], encoder.plan(), [False, True])
    counter = encoder.token_passes
    before = counter.snapshot()
    reused = pooled_vectors(encoder, perturbed, [False, True], (references, of))
    reused_passes = counter.since(before)
    before = counter.snapshot()
    full = pooled_vectors(encoder.with_setting(prefix_reuse=False), perturbed, [False, True])
    assert reused_passes < counter.since(before)
    for flag in (False, True):
        np.testing.assert_allclose(reused[flag], full[flag], atol=1e-5, rtol=0)


def test_the_pages_curves_are_the_same_with_and_without_reuse(encoder):  # noqa: F811
    options = {"k": 2, "methods": ("attention_last", "random")}
    on = text_curves(encoder, SAMPLE[0][1], SAMPLE[1][1], **options)
    off = text_curves(encoder.with_setting(prefix_reuse=False), SAMPLE[0][1], SAMPLE[1][1], **options)
    for label in on:
        for method in options["methods"]:
            for measure in MEASURED:
                np.testing.assert_allclose(
                    on[label]["methods"][method]["curves"][measure],
                    off[label]["methods"][method]["curves"][measure],
                    atol=1e-5,
                    rtol=0,
                )
    assert FaithfulnessConfig().prefix_reuse
