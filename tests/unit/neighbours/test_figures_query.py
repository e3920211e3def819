"""The explorer's figures (overlap colouring, names, arrows, linked twin view) and a search query's settings from
a saved run's sidecar."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from analysis.neighbours.figures import add_arrows, add_cluster_names, linked_figure, linked_html, value_scatter
from analysis.neighbours.names import ClusterName
from analysis.neighbours.runs import Run, query_settings
from core.runtime.errors import UserFileError


def test_overlap_scatter_maps_markers_to_texts_and_pins_the_scale():
    points = np.arange(12, dtype=float).reshape(6, 2)
    figure = value_scatter(points, [f"t{i}" for i in range(6)], np.linspace(0, 1, 6), "x", "Jaccard@5", [1, 4], (0, 1))
    trace = figure.data[0]
    assert trace.type == "scattergl" and list(trace.customdata) == list(range(6))
    assert list(trace.selectedpoints) == [1, 4] and (trace.marker.cmin, trace.marker.cmax) == (0, 1)


def test_names_sit_at_cluster_medians_and_arrows_join_twins():
    points = np.array([[0, 0], [0, 2], [10, 10], [10, 12]], dtype=float)
    figure = value_scatter(points, list("abcd"), np.zeros(4), "x", "v")
    names = [ClusterName("0", 2, ("cat", "dog"), (0.5, 0.4)), ClusterName("1", 2, (), ())]
    add_cluster_names(figure, points, [0, 0, 1, 1], names)
    assert [(a.x, a.y, a.text) for a in figure.layout.annotations] == [(0.0, 1.0, "cat, dog"), (10.0, 11.0, "1")]
    add_arrows(figure, points, points + 1, [2])
    lines = figure.data[1]
    assert list(lines.x[:2]) == [10, 11] and np.isnan(lines.x[2]) and list(figure.data[2].customdata) == [2]


def test_the_linked_view_rings_twins_from_one_script():
    first, second = np.zeros((5, 2)), np.ones((5, 2))
    figure = linked_figure(first, second, list("abcde"), ("base", "adapter"), np.linspace(0, 1, 5), "Jaccard")
    assert [t.type for t in figure.data] == ["scattergl", "scattergl", "scatter", "scatter"]
    assert figure.data[2].xaxis == "x" and figure.data[3].xaxis == "x2"
    html = linked_html(figure)
    assert "plotly_hover" in html and "Plotly.restyle" in html and 'src="https:' not in html


BASE = {"model": "m", "weights_sha256": "w", "adapter_sha256": None}
ADAPTER = {"model": "m", "weights_sha256": "w", "adapter_sha256": "a"}


def test_a_query_is_embedded_as_the_run_was():
    sidecar = {**ADAPTER, "prompt": "This sentence: {text}", "mode": "last", "layer": "-2", "max_length": 64,
               "method_spec": "plain"}  # fmt: skip
    how = query_settings(Run(Path("r.npy"), np.zeros((1, 2)), sidecar), BASE, ADAPTER)
    assert how == {"method": "plain", "prompt": "This sentence: {text}", "pooling": "last", "layer": "-2",
                   "max_length": 64, "use_adapter": True}  # fmt: skip
    base_run = Run(Path("r.npy"), np.zeros((1, 2)), {**BASE, "mode": "mean", "layer": "-1"})
    assert query_settings(base_run, BASE, None)["use_adapter"] is False


def test_a_query_for_another_model_says_which_to_choose():
    run = Run(Path("r.npy"), np.zeros((1, 2)), {**ADAPTER, "model": "other", "mode": "mean"})
    with pytest.raises(UserFileError, match="embedded by other with the adapter"):
        query_settings(run, BASE, ADAPTER)
    with pytest.raises(UserFileError, match="no settings sidecar"):
        query_settings(Run(Path("r.npy"), np.zeros((1, 2))), BASE, None)
