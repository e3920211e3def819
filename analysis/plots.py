"""Plotly figures for the analyses: pure functions, data in, ``go.Figure`` out (no file or model access)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go


def clustering_heatmap(
    scores: pd.DataFrame,
    stds: pd.DataFrame | None = None,
    *,
    title: str = "Clustering V-measure",
    metric: str = "V-measure",
) -> go.Figure:
    """Rows (model x prompt x pooling x layer) by tasks (plus average), coloured and labelled by score.

    ``scores``: index = row labels, columns = task names, values in [0, 1] or NaN (not run).
    ``stds``: the same shape, shown on hover as the spread over k-means seeds.
    """
    values = scores.to_numpy(dtype=float)
    text = np.where(np.isnan(values), "", np.vectorize(lambda v: f"{v:.3f}")(np.nan_to_num(values)))
    custom = stds.reindex_like(scores).to_numpy(dtype=float) if stds is not None else np.full_like(values, np.nan)
    figure = go.Figure(
        go.Heatmap(
            z=values,
            x=[str(c) for c in scores.columns],
            y=[str(i) for i in scores.index],
            text=text,
            texttemplate="%{text}",
            customdata=custom,
            hovertemplate="%{y}<br>%{x}: %{z:.4f} ± %{customdata:.4f}<extra></extra>",
            colorscale="Viridis",
            colorbar={"title": metric},
        )
    )
    figure.update_layout(
        title=title,
        xaxis={"side": "top"},
        yaxis={"autorange": "reversed"},
        height=max(320, 26 * len(scores.index) + 160),
        width=max(560, 110 * len(scores.columns) + 360),
        margin={"l": 20, "r": 20, "t": 110, "b": 20},
    )
    return figure


def clustering_bars(
    scores: pd.DataFrame,
    group_by: Sequence[str] = ("prompt", "pooling"),
    *,
    value: str = "average",
    title: str = "Average V-measure",
) -> go.Figure:
    """Grouped bars of one column (default: the average over tasks), e.g. pooling within prompt.

    ``scores``: one row per grid row, with the ``group_by`` columns and ``value``; a ``variant`` column,
    when present, becomes one bar trace per variant and pooling.
    """
    outer, inner = group_by
    figure = go.Figure()
    series = ["variant", inner] if "variant" in scores.columns else [inner]
    for keys, part in scores.groupby(series, sort=False):
        name = " / ".join(str(k) for k in (keys if isinstance(keys, tuple) else (keys,)))
        figure.add_bar(x=part[outer].astype(str), y=part[value], name=name)
    figure.update_layout(title=title, barmode="group", yaxis_title=value, xaxis_title=outer, legend_title=inner)
    return figure
