"""Figures of integrated-gradients attribution: token shares of one text, token-pair matrices."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

__all__ = ["attribution_bars_figure", "pair_matrix_figure"]


def attribution_bars_figure(attributions: Mapping[str, Mapping[str, Any]], title: str) -> go.Figure:
    """Per-token attribution shares of one text under several settings: ``{setting: Attribution.to_dict()}``."""
    figure = go.Figure()
    for setting, data in attributions.items():
        labels = [f"{i}:{token}" for i, token in enumerate(data["tokens"])]
        figure.add_trace(go.Bar(x=labels, y=data["scores"], name=f"{setting} (delta {data['relative_delta']:.1%})"))
    figure.update_layout(
        barmode="group", title=title, xaxis_title="token", yaxis_title="IG attribution", template="plotly_white"
    )
    return figure


def pair_matrix_figure(matrices: Mapping[str, Mapping[str, Any]], title: str) -> go.Figure:
    """Token x token contributions to a cosine, one panel per setting plus adapter - base where both are given.

    ``matrices``: ``{setting: PairMatrix.to_dict()}``; rows are text A's tokens, columns text B's.
    """
    panels = {label: np.asarray(data["matrix"], dtype=float) for label, data in matrices.items()}
    if "base" in panels and "adapter" in panels:
        panels["adapter - base"] = panels["adapter"] - panels["base"]
    first = next(iter(matrices.values()))
    rows = [f"{i}:{t.strip() or repr(t)}" for i, t in enumerate(first["tokens_a"])]
    columns = [f"{j}:{t.strip() or repr(t)}" for j, t in enumerate(first["tokens_b"])]
    names = [
        f"{label} (cos {matrices[label]['similarity']:.3f}, error {matrices[label]['error']:.3f})"
        if label in matrices
        else label
        for label in panels
    ]
    figure = make_subplots(rows=1, cols=len(panels), subplot_titles=names, horizontal_spacing=0.08)
    for index, values in enumerate(panels.values(), start=1):
        limit = float(np.abs(values).max()) or 1.0
        figure.add_trace(
            go.Heatmap(
                z=values,
                x=columns,
                y=rows,
                colorscale="RdBu",
                zmid=0.0,
                zmin=-limit,
                zmax=limit,
                showscale=False,
                hovertemplate="A %{y} x B %{x}: %{z:+.4f}<extra></extra>",
            ),
            row=1,
            col=index,
        )
        figure.update_yaxes(autorange="reversed", row=1, col=index)
        figure.update_xaxes(tickangle=-60, row=1, col=index)
    figure.update_layout(
        title=title, height=max(360, 22 * len(rows) + 160), template="plotly_white", margin={"l": 10, "r": 10}
    )
    return figure
