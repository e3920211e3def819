"""The embed page's heatmap options: axis names of a reordered matrix, label bands and their outlines."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.plots import similarity_heatmap


def bands(figure, ref: str = "paper") -> list:
    return [shape for shape in figure.layout.shapes if shape.yref == ref]


def test_bands_colour_each_label_run_and_outline_same_label_blocks():
    groups = ["b", "b", "a", "a", "a", "c"]
    figure = similarity_heatmap(np.eye(6), list("uvwxyz"), "t", groups=groups, numbers=[4, 1, 2, 6, 3, 5])
    assert list(figure.data[0].x) == ["4", "1", "2", "6", "3", "5"] == list(figure.data[0].y)
    top = bands(figure)
    assert [(s.x0, s.x1) for s in top] == [(-0.5, 1.5), (1.5, 4.5), (4.5, 5.5)]  # three runs
    assert len({s.fillcolor for s in top}) == 3
    outlines = [s for s in figure.layout.shapes if s.xref == "x" and s.yref == "y"]
    assert [(s.x0, s.x1, s.y0, s.y1) for s in outlines] == [(-0.5, 1.5, -0.5, 1.5), (1.5, 4.5, 1.5, 4.5)]
    assert [trace.name for trace in figure.data[1:]] == ["b", "a", "c"]  # legend: labels in order of appearance
    assert "4. u [b]" in figure.data[0].customdata[0][0]


def test_a_label_that_comes_back_gets_its_colour_again_and_no_labels_no_bands():
    figure = similarity_heatmap(np.eye(3), list("xyz"), "t", groups=["a", "b", "a"])
    first, _, third = bands(figure)
    assert first.fillcolor == third.fillcolor and len(figure.data) == 3
    plain = similarity_heatmap(np.eye(3), list("xyz"), "t")
    assert not plain.layout.shapes and len(plain.data) == 1 and list(plain.data[0].x) == ["1", "2", "3"]


def test_many_texts_drop_the_printed_values_and_grow_the_figure():
    small, large = (similarity_heatmap(np.eye(n), [str(i) for i in range(n)], "t") for n in (6, 60))
    assert small.data[0].texttemplate == "%{text}" and large.data[0].texttemplate is None
    assert large.layout.height > small.layout.height


def test_groups_of_another_length_are_refused():
    with pytest.raises(ValueError, match="2 group labels for 3 texts"):
        similarity_heatmap(np.eye(3), list("xyz"), "t", groups=["a", "b"])
