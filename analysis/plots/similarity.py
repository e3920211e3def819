"""The cosine-similarity heatmap of the embed page."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

__all__ = ["similarity_heatmap"]


def similarity_heatmap(
    matrix: np.ndarray,
    labels: Sequence[str],
    title: str,
    diverging: bool = False,
    zrange: tuple[float, float] | None = None,
    digits: int = 2,
) -> go.Figure:
    """A texts x texts matrix (cosines, or a difference of cosines when ``diverging``); axes are text numbers,
    the texts themselves on hover.

    ``zrange`` fixes the colour scale (pass the same one to figures that are compared side by side); a diverging
    figure is centred at 0 and symmetric. ``digits``: decimals printed in the cells.
    """
    values = np.asarray(matrix, dtype=float)
    limit = float(np.abs(values).max()) or 1.0
    low, high = zrange if zrange is not None else ((-limit, limit) if diverging else (None, None))
    numbers = [str(i + 1) for i in range(len(labels))]
    pairs = np.array([[f"{a}<br>{b}" for b in labels] for a in labels], dtype=object)
    figure = go.Figure(
        go.Heatmap(
            z=values,
            x=numbers,
            y=numbers,
            customdata=pairs,
            colorscale="RdBu" if diverging else "Viridis",
            zmid=0.0 if diverging else None,
            zmin=low,
            zmax=high,
            text=np.vectorize(lambda v: f"{v:.{digits}f}")(values),
            texttemplate="%{text}",
            hovertemplate="%{customdata}<br>%{z:.4f}<extra></extra>",
            colorbar={"title": "Δ cosine" if diverging else "cosine"},
        )
    )
    figure.update_layout(
        title=title,
        xaxis={"title": "text", "type": "category"},
        yaxis={"title": "text", "type": "category", "autorange": "reversed"},
        height=420,
        margin={"l": 10, "r": 10, "t": 50},
    )
    return figure
