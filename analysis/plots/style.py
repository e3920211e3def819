"""Colours and the confidence band the figures share."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

__all__ = ["CATEGORY_COLORS", "ci_band", "rgba"]


CATEGORY_COLORS = {
    "sink": "#7f7f7f",
    "special": "#bcbd22",
    "prompt": "#1f77b4",
    "content": "#d62728",
    "function": "#2ca02c",
    "punct": "#9467bd",
    "first_copy": "#ff7f0e",  # echo's first copy of the text
    "placeholder": "#17becf",  # token prepending's slot
}


def ci_band(x: Sequence[int], low: Sequence[float], high: Sequence[float], color: str, group: str) -> go.Scatter:
    """A shaded confidence band (no legend entry of its own) that toggles with its ``group``'s line."""
    x = list(x)
    return go.Scatter(
        x=x + x[::-1],
        y=list(high) + list(low)[::-1],
        fill="toself",
        fillcolor=rgba(color, 0.15),
        line={"width": 0},
        hoverinfo="skip",
        showlegend=False,
        legendgroup=group,
    )


def rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"
