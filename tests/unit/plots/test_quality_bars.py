"""The Clustering quality bars: one colour per model/adapter however many there are, every row a readable bar."""

from __future__ import annotations

import numpy as np

from analysis.plots import quality_bars
from analysis.plots.clustering import group_colours


def test_group_colours_never_repeat():
    colours = group_colours([f"model {i}" for i in range(59)] * 2)
    assert len(colours) == 59 and len(set(colours.values())) == 59


def test_quality_bars_are_horizontal_in_row_order_with_intervals_and_grow_with_the_rows():
    labels = [f"row {i}" for i in range(59)]
    groups = [f"m{i % 7}" for i in range(59)]
    values = np.linspace(0.6, 0.1, 59)
    figure = quality_bars(labels, values, groups, values - 0.02, values + 0.03, baseline=0.3)
    assert {trace.orientation for trace in figure.data} == {"h"} and len(figure.data) == 7
    assert list(figure.layout.yaxis.categoryarray) == labels[::-1]  # first row on top
    assert figure.layout.height >= 22 * 59
    first = figure.data[0]
    assert np.allclose(first.error_x.array, 0.03) and np.allclose(first.error_x.arrayminus, 0.02)
    assert len({trace.marker.color for trace in figure.data}) == 7
