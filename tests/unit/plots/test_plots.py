"""Workbench figures: what a reader must be able to read off them."""

from __future__ import annotations

import numpy as np

from analysis.plots import CATEGORY_COLORS, attention_heatmap, similarity_heatmap


def test_attention_heatmap_labels_every_token_in_reading_order_coloured_by_role():
    tokens = ["<s>", "a", " man", " is", " driving", " a", " car", ":"] * 5  # 40 tokens: too many for auto ticks
    roles = ["sink", "function", "content", "function", "content", "function", "content", "punct"] * 5
    matrix = np.random.default_rng(0).random((7, len(tokens)))
    figure = attention_heatmap(matrix, tokens, roles, "base", outlined=[6])
    assert np.allclose(np.asarray(figure.data[0].z), matrix.T)  # tokens are rows
    assert list(figure.layout.yaxis.tickvals) == list(range(40)) and figure.layout.yaxis.tickmode == "array"
    ticks = list(figure.layout.yaxis.ticktext)
    assert all(f"{i}:{t.strip()}" in tick for i, (t, tick) in enumerate(zip(tokens, ticks, strict=True)))
    assert CATEGORY_COLORS["content"] in ticks[2] and CATEGORY_COLORS["function"] in ticks[1]
    assert figure.layout.height >= 20 * 40 and len(figure.layout.shapes) == 1 and figure.layout.shapes[0].x0 == 5.5


def test_similarity_heatmaps_share_a_scale_and_the_difference_is_centred():
    matrix = np.array([[1.0, 0.2], [0.2, 1.0]])
    shared = similarity_heatmap(matrix, ["a", "b"], "base", zrange=(0.1, 1.0)).data[0]
    assert (shared.zmin, shared.zmax) == (0.1, 1.0)
    difference = similarity_heatmap(np.array([[0, -0.02], [0.05, 0]]), ["a", "b"], "diff", diverging=True, digits=3)
    assert (
        difference.data[0].zmid == 0.0 and difference.data[0].zmin == -0.05 and "-0.020" in difference.data[0].text[0]
    )


def test_analysis_plots_exports_every_figure_function_of_its_subject_modules():
    import importlib
    import pkgutil

    import analysis.plots as plots

    modules = [info.name for info in pkgutil.iter_modules(plots.__path__)]
    assert {"clustering", "attention", "attribution", "faithfulness", "output"} <= set(modules)
    for name in modules:
        if name == "style":  # helpers the subject modules share, not figures
            continue
        module = importlib.import_module(f"analysis.plots.{name}")
        for public in module.__all__:
            assert public in plots.__all__ and getattr(plots, public) is getattr(module, public), (name, public)
