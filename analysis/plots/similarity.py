"""The cosine-similarity heatmap of the embed page."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.colors
import plotly.graph_objects as go

__all__ = ["similarity_heatmap"]

# Labels get colours in order of first appearance; a long qualitative palette so up to 24 labels never share one.
_BAND_COLORS = plotly.colors.qualitative.Dark24
_BAND_PX = 12  # the label bands' thickness in pixels, outside the plot area; tick labels stand off beyond them
_MAX_CELL_TEXT = 24  # above this many texts the cells are too small for printed values (hover still shows them)


def similarity_heatmap(
    matrix: np.ndarray,
    labels: Sequence[str],
    title: str,
    diverging: bool = False,
    zrange: tuple[float, float] | None = None,
    digits: int = 2,
    *,
    numbers: Sequence[int] | None = None,
    groups: Sequence[str] | None = None,
    height: int | None = None,
) -> go.Figure:
    """A texts x texts matrix (cosines, or a difference of cosines when ``diverging``); axes are text numbers,
    the texts themselves on hover.

    ``zrange`` fixes the colour scale (pass the same one to figures that are compared side by side); a diverging
    figure is centred at 0 and symmetric. ``digits``: decimals printed in the cells (left out above 24 texts).
    ``numbers``: the axis name of each row (default 1..n; pass the original numbers of a reordered matrix).
    ``groups``: a label per row, drawn as coloured bands along both axes (one colour per label, named on hover
    and in the legend), with each run of equal labels on the diagonal outlined. ``height`` in pixels (default
    grows with the number of texts).
    """
    values = np.asarray(matrix, dtype=float)
    n = len(labels)
    if values.shape != (n, n):
        raise ValueError(f"a {n} x {n} matrix is needed for {n} texts, got {values.shape}")
    if groups is not None and len(groups) != n:
        raise ValueError(f"{len(groups)} group labels for {n} texts")
    limit = float(np.abs(values).max()) if values.size else 1.0
    limit = limit or 1.0
    low, high = zrange if zrange is not None else ((-limit, limit) if diverging else (None, None))
    names = [str(i) for i in numbers] if numbers is not None else [str(i + 1) for i in range(n)]
    hover_rows = [f"{name}. {text}" for name, text in zip(names, labels, strict=True)]
    if groups is not None:
        hover_rows = [f"{row} [{group}]" for row, group in zip(hover_rows, groups, strict=True)]
    pairs = np.array([[f"{a}<br>{b}" for b in hover_rows] for a in hover_rows], dtype=object)
    printed = n <= _MAX_CELL_TEXT
    figure = go.Figure(
        go.Heatmap(
            z=values,
            x=names,
            y=names,
            customdata=pairs,
            colorscale="RdBu" if diverging else "Viridis",
            zmid=0.0 if diverging else None,
            zmin=low,
            zmax=high,
            text=np.vectorize(lambda v: f"{v:.{digits}f}")(values) if printed and n else None,
            texttemplate="%{text}" if printed else None,
            hovertemplate="%{customdata}<br>%{z:.4f}<extra></extra>",
            colorbar={"title": "Δ cosine" if diverging else "cosine"},
        )
    )
    figure.update_layout(
        title=title,
        xaxis={"title": "text", "type": "category"},
        yaxis={"title": "text", "type": "category", "autorange": "reversed"},
        height=height or int(min(1100, max(480, 16 * n + 220))),
        margin={"l": 10, "r": 10, "t": 50},
    )
    if groups is not None and n:
        _label_bands(figure, list(groups))
    return figure


def _label_bands(figure: go.Figure, groups: list[str]) -> None:
    """Colour bands along the top and left edges (one colour per label) and outlines of same-label diagonal runs."""
    colors = {label: _BAND_COLORS[i % len(_BAND_COLORS)] for i, label in enumerate(dict.fromkeys(groups))}
    runs: list[tuple[int, int, str]] = []  # [start, end] index runs of one label, in row order
    for i, label in enumerate(groups):
        if runs and runs[-1][2] == label and runs[-1][1] == i - 1:
            runs[-1] = (runs[-1][0], i, label)
        else:
            runs.append((i, i, label))
    for start, end, label in runs:
        color = colors[label]
        span = (start - 0.5, end + 0.5)
        figure.add_shape(type="rect", xref="x", yref="paper", ysizemode="pixel", yanchor=1, y0=2, y1=2 + _BAND_PX,
                         x0=span[0], x1=span[1], fillcolor=color, line={"width": 0})  # fmt: skip
        figure.add_shape(type="rect", xref="paper", yref="y", xsizemode="pixel", xanchor=0, x0=-2 - _BAND_PX, x1=-2,
                         y0=span[0], y1=span[1], fillcolor=color, line={"width": 0})  # fmt: skip
        if end > start:
            figure.add_shape(type="rect", xref="x", yref="y", x0=span[0], x1=span[1], y0=span[0], y1=span[1],
                             line={"color": "white", "width": 1.5}, fillcolor="rgba(0,0,0,0)")  # fmt: skip
    for label, color in colors.items():  # the legend names each band colour
        figure.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=label, showlegend=True,
                                    marker={"symbol": "square", "size": 12, "color": color}))  # fmt: skip
    figure.update_layout(
        legend={"orientation": "h", "yanchor": "top", "y": -0.12, "x": 0, "title": {"text": "label"}},
        margin={"l": 40, "r": 10, "t": 70},
        xaxis={"title": None},
        yaxis={"ticklabelstandoff": _BAND_PX + 4},
    )
