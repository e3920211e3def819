"""The 2-D projection scatter of the cluster explorer."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

__all__ = ["DISTINCT_COLORS", "projection_scatter"]


# Kelly's colours of maximum contrast (white dropped): no two look alike, unlike plotly's default cycle.
DISTINCT_COLORS = (
    "#F3C300", "#875692", "#F38400", "#A1CAF1", "#BE0032", "#C2B280", "#848482", "#008856", "#E68FAC", "#0067A5",
    "#F99379", "#604E97", "#F6A600", "#B3446C", "#DCD300", "#882D17", "#8DB600", "#654522", "#E25822", "#2B3D26",
    "#222222",
)  # fmt: skip


def projection_scatter(
    points: np.ndarray,
    texts: Sequence[str],
    colours: Sequence[str],
    title: str,
    colour_title: str = "label",
    highlight: Sequence[int] | None = None,
) -> go.Figure:
    """A 2-D projection, one trace per colour group (so the legend filters), the text on hover.

    Groups get :data:`DISTINCT_COLORS` in order (they repeat after 21 groups). ``highlight``: text indices
    shown selected (the rest faded), e.g. a selection made in another plot of the same texts.
    """
    figure = go.Figure()
    colours = [str(c) for c in colours]
    short = [t if len(t) <= 160 else t[:159] + "…" for t in texts]
    chosen = set(highlight) if highlight else None
    for number, group in enumerate(sorted(set(colours), key=lambda g: (len(g), g))):
        index = [i for i, c in enumerate(colours) if c == group]
        figure.add_scattergl(
            x=points[index, 0],
            y=points[index, 1],
            mode="markers",
            name=group,
            marker={"size": 5, "opacity": 0.8, "color": DISTINCT_COLORS[number % len(DISTINCT_COLORS)]},
            customdata=np.array(index),
            hovertext=[short[i] for i in index],
            hovertemplate="%{hovertext}<extra>" + group + "</extra>",
            selectedpoints=None if chosen is None else [n for n, i in enumerate(index) if i in chosen],
            selected={"marker": {"size": 9, "opacity": 1.0}},
            unselected={"marker": {"opacity": 0.12}},
        )
    figure.update_layout(
        title=title, height=520, legend_title=colour_title, dragmode="lasso", margin={"l": 10, "r": 10, "t": 50}
    )
    figure.update_xaxes(showticklabels=False)
    figure.update_yaxes(showticklabels=False)
    return figure
