"""Figures of the clustering grid: scores per cell, per model and setting, and the tracks' gains."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

__all__ = ["clustering_bars", "clustering_heatmap", "group_colours", "quality_bars", "track_gain_scatter"]


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
    baseline: float | None = None,
    baseline_name: str = "MiniLM baseline",
) -> go.Figure:
    """Grouped bars of one column (default: the average over tasks), e.g. pooling within prompt.

    ``scores``: one row per grid row, with the ``group_by`` columns and ``value``; a ``variant`` column,
    when present, becomes one bar trace per variant and pooling. Bars and groups keep the rows' order.
    ``baseline``: a dashed horizontal line at that value, named ``baseline_name``.
    """
    outer, inner = group_by
    figure = go.Figure()
    series = ["variant", inner] if "variant" in scores.columns else [inner]
    for keys, part in scores.groupby(series, sort=False):
        name = " / ".join(str(k) for k in (keys if isinstance(keys, tuple) else (keys,)))
        figure.add_bar(x=part[outer].astype(str), y=part[value], name=name)
    if baseline is not None and not np.isnan(baseline):
        figure.add_hline(
            y=baseline, line_dash="dash", line_color="#444", annotation_text=f"{baseline_name} {baseline:.3f}"
        )
    figure.update_layout(
        title=title,
        barmode="group",
        yaxis_title=value,
        xaxis_title=outer,
        xaxis={"categoryorder": "array", "categoryarray": list(dict.fromkeys(scores[outer].astype(str)))},
        legend_title=" / ".join(series),
    )
    return figure


def group_colours(groups: Sequence[str]) -> dict[str, str]:
    """One colour per distinct group, in first-seen order, never two groups alike: Kelly's contrast colours, then
    evenly spaced hues at two lightnesses for any further groups."""
    from analysis.plots.projections import DISTINCT_COLORS

    names = list(dict.fromkeys(map(str, groups)))
    extra = max(0, len(names) - len(DISTINCT_COLORS))
    hues = [f"hsl({round(360 * i / max(extra, 1))}, 70%, {35 + 25 * (i % 2)}%)" for i in range(extra)]
    return dict(zip(names, [*DISTINCT_COLORS, *hues], strict=False))


def quality_bars(
    labels: Sequence[str],
    values: Sequence[float],
    groups: Sequence[str],
    low: Sequence[float] | None = None,
    high: Sequence[float] | None = None,
    *,
    title: str = "Average V-measure",
    value_title: str = "average V-measure",
    baseline: float | None = None,
    baseline_name: str = "MiniLM baseline",
) -> go.Figure:
    """Horizontal bars, one per row, first row on top; the figure grows with the rows so every bar stays readable.

    ``groups`` (e.g. model / adapter) colour the bars, one legend entry each, never two groups alike
    (:func:`group_colours`). ``low``/``high``: an interval per bar drawn as error bars (NaN: none).
    ``baseline``: a dashed vertical line at that value.
    """
    labels, groups = [str(label) for label in labels], [str(group) for group in groups]
    values = np.asarray(values, dtype=float)
    lows = np.asarray(low if low is not None else values, dtype=float)
    highs = np.asarray(high if high is not None else values, dtype=float)
    colours = group_colours(groups)
    figure = go.Figure()
    for group, colour in colours.items():
        index = [i for i, g in enumerate(groups) if g == group]
        figure.add_bar(
            y=[labels[i] for i in index], x=values[index], orientation="h", name=group, marker_color=colour,
            error_x={"type": "data", "symmetric": False, "array": np.nan_to_num(highs[index] - values[index]),
                     "arrayminus": np.nan_to_num(values[index] - lows[index]), "thickness": 1},
            hovertemplate="%{y}<br>%{x:.4f}<extra>%{fullData.name}</extra>",
        )  # fmt: skip
    if baseline is not None and not np.isnan(baseline):
        figure.add_vline(
            x=baseline, line_dash="dash", line_color="#444", annotation_text=f"{baseline_name} {baseline:.3f}"
        )
    figure.update_layout(
        title=title,
        xaxis_title=value_title,
        yaxis={"categoryorder": "array", "categoryarray": labels[::-1], "automargin": True},
        height=max(320, 22 * len(labels) + 160),
        legend_title="model / adapter",
        barmode="overlay",
        margin={"l": 10, "r": 10, "t": 60, "b": 40},
    )
    return figure


def track_gain_scatter(gains: pd.DataFrame, title: str = "In-domain gain vs transfer gain") -> go.Figure:
    """One point per adapter row of ``analysis.clustering.track_gains``: x its gain over its base model on the
    local track (where its pairs came from), y on the transfer track. Points below the diagonal gain less on
    unseen corpora than in-domain; below zero, the adapter is worse than its base there."""
    figure = go.Figure()
    settings = [c for c in gains.columns if c not in ("variant", "local gain", "transfer gain")]
    for variant, part in gains.groupby("variant", sort=False):
        labels = [" / ".join(map(str, values)) for values in part[settings].itertuples(index=False)]
        figure.add_scatter(
            x=part["local gain"].tolist(), y=part["transfer gain"].tolist(), mode="markers", name=str(variant),
            text=labels,
            hovertemplate="%{text}<br>local gain %{x:+.4f}<br>transfer gain %{y:+.4f}<extra>%{fullData.name}</extra>",
        )  # fmt: skip
    values = [*gains["local gain"].dropna(), *gains["transfer gain"].dropna(), 0.0]
    low, high = min(values) - 0.01, max(values) + 0.01
    figure.add_scatter(x=[low, high], y=[low, high], mode="lines", name="equal gain", line={"dash": "dot"})
    figure.add_hline(y=0, line_color="#999")
    figure.add_vline(x=0, line_color="#999")
    figure.update_layout(
        title=title,
        xaxis_title="local-track gain over base (V-measure)",
        yaxis_title="transfer-track gain over base (V-measure)",
        legend_title="adapter",
    )
    return figure
