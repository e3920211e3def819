"""The training curve of an adapter (loss and learning rate per step)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

__all__ = ["training_curve"]


def training_curve(rows: Sequence[Mapping[str, Any]], title: str) -> go.Figure:
    """Loss per step (left axis) and learning rate (right axis) from a ``train_log.jsonl``."""
    steps = [r["step"] for r in rows]
    figure = go.Figure()
    figure.add_scatter(x=steps, y=[r["loss"] for r in rows], name="loss", mode="lines")
    figure.add_scatter(x=steps, y=[r["lr"] for r in rows], name="lr", mode="lines", yaxis="y2", line={"dash": "dot"})
    figure.update_layout(
        title=title,
        xaxis_title="step",
        yaxis_title="InfoNCE loss",
        yaxis2={"title": "learning rate", "overlaying": "y", "side": "right", "showgrid": False},
        height=340,
        template="plotly_white",
    )
    return figure
