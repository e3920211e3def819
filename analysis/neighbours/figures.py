"""Figures of the neighbourhood diff: a WebGL scatter coloured by a per-text value, cluster names on a layout,
arrows from one aligned layout to the other, and the distribution of Jaccard@k.

Everything is plotly ``Scattergl`` (tens of thousands of points stay interactive); each marker's ``customdata`` is
its text index, so a selection maps back to texts as on the other explorer plots.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from jaxtyping import Float

from analysis.neighbours.names import ClusterName

__all__ = ["add_arrows", "add_cluster_names", "jaccard_histogram", "linked_figure", "linked_html", "value_scatter"]

HOVER_CHARS = 160


def _short(texts: Sequence[str]) -> list[str]:
    return [t if len(t) <= HOVER_CHARS else t[: HOVER_CHARS - 1] + "…" for t in texts]


def value_scatter(
    points: Float[np.ndarray, "texts 2"],
    texts: Sequence[str],
    values: Float[np.ndarray, " texts"],
    title: str,
    value_name: str,
    highlight: Sequence[int] | None = None,
    value_range: tuple[float, float] | None = None,
) -> go.Figure:
    """One Scattergl trace of every text, coloured by ``values`` on a continuous scale (low = red: moved).

    ``highlight``: indices shown selected (larger, opaque), the rest faded; ``value_range`` pins the colour scale
    so two plots share it.
    """
    values = np.asarray(values, dtype=float)
    low, high = value_range if value_range is not None else (float(values.min()), float(values.max()))
    figure = go.Figure(
        go.Scattergl(
            x=points[:, 0],
            y=points[:, 1],
            mode="markers",
            name=value_name,
            marker={
                "size": 5,
                "opacity": 0.85,
                "color": values,
                "colorscale": "RdYlBu",
                "cmin": low,
                "cmax": high,
                "colorbar": {"title": value_name, "thickness": 12},
            },
            customdata=np.arange(len(points)),
            hovertext=_short(texts),
            hovertemplate="%{hovertext}<extra>" + value_name + " %{marker.color:.2f}</extra>",
            selectedpoints=list(highlight) if highlight else None,
            selected={"marker": {"size": 9, "opacity": 1.0}},
            unselected={"marker": {"opacity": 0.12}},
        )
    )
    figure.update_layout(title=title, height=520, dragmode="lasso", margin={"l": 10, "r": 10, "t": 50})
    figure.update_xaxes(showticklabels=False)
    figure.update_yaxes(showticklabels=False)
    return figure


def add_cluster_names(
    figure: go.Figure, points: Float[np.ndarray, "texts 2"], clusters: Sequence[object], names: Sequence[ClusterName]
) -> go.Figure:
    """Each cluster's short name written at the median of its points (medians sit inside a cluster even when a
    few of its points are far away)."""
    keys = np.array([str(c) for c in clusters])
    for name in names:
        members = points[keys == name.cluster]
        if len(members):
            x, y = np.median(members, axis=0)
            figure.add_annotation(
                x=float(x),
                y=float(y),
                text=name.label,
                showarrow=False,
                font={"size": 11, "color": "#111"},
                bgcolor="rgba(255,255,255,0.7)",
            )
    return figure


def add_arrows(
    figure: go.Figure, start: Float[np.ndarray, "texts 2"], end: Float[np.ndarray, "texts 2"], chosen: Sequence[int]
) -> go.Figure:
    """Lines from each chosen text's position in ``start`` to its position in ``end`` (both aligned layouts), with
    a marker at the end: where the second embedding put it."""
    if not len(chosen):
        return figure
    index = np.asarray(chosen, dtype=int)
    xs = np.column_stack([start[index, 0], end[index, 0], np.full(len(index), np.nan)]).ravel()
    ys = np.column_stack([start[index, 1], end[index, 1], np.full(len(index), np.nan)]).ravel()
    figure.add_scattergl(
        x=xs, y=ys, mode="lines", line={"color": "#333", "width": 1}, name="move", hoverinfo="skip", showlegend=False
    )
    figure.add_scattergl(
        x=end[index, 0],
        y=end[index, 1],
        mode="markers",
        name="moved to",
        marker={"symbol": "x", "size": 8, "color": "#111"},
        customdata=index,
        showlegend=False,
    )
    return figure


def jaccard_histogram(jaccard: Float[np.ndarray, " texts"], k: int, names: tuple[str, str]) -> go.Figure:
    """How many texts keep how much of their neighbourhood (Jaccard@k takes k + 1 values: j / (2k - j))."""
    figure = go.Figure(
        go.Histogram(
            x=np.asarray(jaccard, dtype=float),
            xbins={"start": -0.025, "end": 1.025, "size": 0.05},
            marker_color="#4c78a8",
        )
    )
    figure.update_layout(
        title=f"Jaccard@{k} of each text's neighbours: {names[0]} vs {names[1]}",
        height=300,
        xaxis_title=f"Jaccard@{k} (1 = same neighbours)",
        yaxis_title="texts",
        bargap=0.05,
        margin={"l": 10, "r": 10, "t": 50},
    )
    return figure


# On hover over text i in either panel, a ring marks text i in both: restyle of the two ring traces (2 and 3).
TWIN_SCRIPT = """
var gd = document.getElementById('{plot_id}');
gd.on('plotly_hover', function (event) {
    var point = event.points[0];
    if (point.curveNumber > 1) { return; }
    // _fullData holds the decoded arrays (gd.data may keep plotly.py's base64 form).
    var i = point.pointNumber, a = gd._fullData[0], b = gd._fullData[1];
    Plotly.restyle(gd, {x: [[a.x[i]], [b.x[i]]], y: [[a.y[i]], [b.y[i]]]}, [2, 3]);
});
"""


def linked_figure(
    first: Float[np.ndarray, "texts 2"],
    second: Float[np.ndarray, "texts 2"],
    texts: Sequence[str],
    names: tuple[str, str],
    values: Float[np.ndarray, " texts"] | None = None,
    value_name: str = "",
) -> go.Figure:
    """Both layouts in one figure (two panels), point ``i`` = text ``i`` in both, plus two empty ring traces that
    :data:`TWIN_SCRIPT` moves onto the hovered text's twin. ``values`` colours both panels on one scale."""
    from plotly.subplots import make_subplots

    figure = make_subplots(rows=1, cols=2, subplot_titles=[f"{names[0]} (hover: its twin is ringed)", names[1]])
    short = _short(texts)
    colour = (
        {"color": np.asarray(values, dtype=float), "colorscale": "RdYlBu", "cmin": 0, "cmax": 1}
        if values is not None
        else {"color": "#4c78a8"}
    )
    for column, points in ((1, first), (2, second)):
        marker = {"size": 4, "opacity": 0.8, **colour}
        if values is not None and column == 2:
            marker["colorbar"] = {"title": value_name, "thickness": 12}
        figure.add_trace(
            go.Scattergl(
                x=points[:, 0],
                y=points[:, 1],
                mode="markers",
                marker=marker,
                hovertext=short,
                hovertemplate="%{hovertext}<extra></extra>",
                showlegend=False,
            ),
            row=1,
            col=column,
        )
    ring = {"symbol": "circle-open", "size": 16, "color": "#000", "line": {"width": 3}}
    for column in (1, 2):
        figure.add_trace(
            go.Scatter(x=[], y=[], mode="markers", marker=ring, hoverinfo="skip", showlegend=False), row=1, col=column
        )
    # The twin rings: trace 2 on the first panel, trace 3 on the second (TWIN_SCRIPT restyles them together).
    figure.update_layout(height=520, margin={"l": 10, "r": 10, "t": 50}, hovermode="closest")
    figure.update_xaxes(showticklabels=False)
    figure.update_yaxes(showticklabels=False)
    return figure


def linked_html(figure: go.Figure) -> str:
    """A self-contained page (plotly.js inlined: no network) of :func:`linked_figure` with the twin script."""
    return figure.to_html(include_plotlyjs=True, full_html=True, post_script=TWIN_SCRIPT)
