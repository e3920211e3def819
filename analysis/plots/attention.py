"""Figures of attention: the shift per layer and head, token shares, one text's attention map."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from analysis.plots.attribution import attribution_bars_figure
from analysis.plots.style import CATEGORY_COLORS, ci_band

__all__ = [
    "attention_heatmap",
    "base_shares_figure",
    "head_heatmap_figure",
    "layer_shift_figure",
    "report_figures",
    "role_shares_figure",
    "token_bars_figure",
]


def layer_shift_figure(per_layer: Mapping[str, Mapping[str, Sequence[float]]], title: str) -> go.Figure:
    """Mean shift per layer and category with its confidence band: ``{category: {mean, ci_low, ci_high}}``."""
    figure = go.Figure()
    for category, stats in per_layer.items():
        color = CATEGORY_COLORS.get(category, "#333333")
        layers = list(range(len(stats["mean"])))
        figure.add_trace(ci_band(layers, stats["ci_low"], stats["ci_high"], color, category))
        figure.add_trace(
            go.Scatter(
                x=layers,
                y=list(stats["mean"]),
                mode="lines+markers",
                name=category,
                legendgroup=category,
                line={"color": color},
            )
        )
    figure.add_hline(y=0, line={"color": "black", "width": 1, "dash": "dot"})
    figure.update_layout(
        title=title, xaxis_title="layer", yaxis_title="attention share, adapter - base", template="plotly_white"
    )
    return figure


def head_heatmap_figure(matrix: Sequence[Sequence[float]], title: str, value_label: str = "shift") -> go.Figure:
    """A layer x head heatmap (rows are layers), centred on zero."""
    bound = max((abs(v) for row in matrix for v in row), default=1.0) or 1.0
    figure = go.Figure(
        go.Heatmap(
            z=[list(row) for row in matrix],
            colorscale="RdBu",
            reversescale=True,
            zmin=-bound,
            zmax=bound,
            colorbar={"title": value_label},
            hovertemplate="layer %{y}, head %{x}: %{z:.4f}<extra></extra>",
        )
    )
    figure.update_layout(title=title, xaxis_title="head", yaxis_title="layer", template="plotly_white")
    return figure


def base_shares_figure(shares_per_layer: Mapping[str, Sequence[float]], title: str) -> go.Figure:
    """Stacked attention shares per layer by category (one setting)."""
    figure = go.Figure()
    for category, values in shares_per_layer.items():
        figure.add_trace(
            go.Bar(
                x=list(range(len(values))), y=list(values), name=category, marker_color=CATEGORY_COLORS.get(category)
            )
        )
    figure.update_layout(
        barmode="stack", title=title, xaxis_title="layer", yaxis_title="attention share", template="plotly_white"
    )
    return figure


def token_bars_figure(example: Mapping[str, Any], renormalised: bool = False) -> go.Figure:
    """Per-token attention of the pooled token, base vs adapter (when present), tokens in order."""
    suffix = "_renormalised" if renormalised else ""
    labels = [f"{i}:{token}" for i, token in enumerate(example["tokens"])]
    hover = [
        f"{token!r} ({category})" for token, category in zip(example["tokens"], example["categories"], strict=True)
    ]
    figure = go.Figure()
    for setting, color in (("base", "#7f7f7f"), ("adapter", "#d62728")):
        if setting + suffix in example:
            figure.add_trace(
                go.Bar(x=labels, y=example[setting + suffix], name=setting, marker_color=color, hovertext=hover)
            )
    head = "mean over heads" if example.get("head") is None else f"head {example['head']}"
    which = ", sink and specials removed" if renormalised else ""
    figure.update_layout(
        barmode="group",
        title=f"{example.get('text', '')!r}: layer {example['layer']}, {head}{which}",
        xaxis_title="token",
        yaxis_title="attention of the pooled token",
        template="plotly_white",
    )
    return figure


def report_figures(report: Mapping[str, Any]) -> dict[str, go.Figure]:
    """Every figure of an ``analysis.attention`` report, by file stem."""
    figures: dict[str, go.Figure] = {}
    figures["base_shares"] = base_shares_figure(report["base"]["shares_per_layer"], "Base: pooled-token attention")
    shift = report.get("shift")
    if shift:
        n = shift["n_texts"]
        figures["layer_shift"] = layer_shift_figure(
            shift["per_layer_renormalised"], f"Attention shift per layer (sink removed), 95% CI, n={n}"
        )
        figures["layer_shift_raw"] = layer_shift_figure(shift["per_layer_raw"], f"Attention shift per layer, n={n}")
        figures["head_shift"] = head_heatmap_figure(
            shift["per_layer_head_focus"]["mean"], f"Shift of {shift['focus']} share by layer and head (sink removed)"
        )
    for index, example in enumerate(report.get("examples", [])):
        figures[f"tokens_{index}"] = token_bars_figure(example)
        figures[f"tokens_{index}_renormalised"] = token_bars_figure(example, renormalised=True)
    attribution = report.get("attribution") or {}
    if attribution:
        first = {setting: data["token_shares"][0] for setting, data in attribution.items()}
        figures["attribution_example"] = attribution_bars_figure(first, "IG: tokens' part of the pooled vector's norm")
        for part in ("a", "b"):
            pair = {setting: data["similarity"][part] for setting, data in attribution.items()}
            figures[f"attribution_similarity_{part}"] = attribution_bars_figure(
                pair, f"IG: text {part.upper()}'s tokens in the cosine to the other text"
            )
    return figures


def _coloured_tokens(tokens: Sequence[str], categories: Sequence[str]) -> list[str]:
    return [
        f"<span style='color:{CATEGORY_COLORS.get(c, '#000')}'>{i}:{t.strip() or repr(t)}</span>"
        for i, (t, c) in enumerate(zip(tokens, categories, strict=True))
    ]


def attention_heatmap(
    matrix: np.ndarray,
    tokens: Sequence[str],
    categories: Sequence[str],
    title: str,
    diverging: bool = False,
    outlined: Sequence[int] = (),
) -> go.Figure:
    """The pooled token's attention, ``matrix`` = layers x tokens, drawn transposed: tokens are the rows, in
    reading order, each one labelled (``index:token``, coloured by role) however many there are; layers are
    the columns. ``outlined``: layers boxed (e.g. those the chosen Layer pools)."""
    values = np.asarray(matrix, dtype=float)
    n_layers, n_tokens = values.shape
    limit = float(np.abs(values).max()) or 1.0
    plain = [f"{i}:{t.strip() or repr(t)}" for i, t in enumerate(tokens)]
    figure = go.Figure(
        go.Heatmap(
            z=values.T,
            x=list(range(n_layers)),
            y=list(range(n_tokens)),
            customdata=np.array([[label] * n_layers for label in plain], dtype=object),
            colorscale="RdBu" if diverging else "Viridis",
            zmid=0.0 if diverging else None,
            zmin=-limit if diverging else 0.0,
            zmax=limit if diverging else None,
            hovertemplate="L%{x} %{customdata}: %{z:.4f}<extra></extra>",
            colorbar={"title": "Δ attention" if diverging else "attention"},
        )
    )
    figure.update_yaxes(
        tickmode="array", tickvals=list(range(n_tokens)), ticktext=_coloured_tokens(tokens, categories),
        autorange="reversed", tickfont={"size": 11}, title="token",
    )  # fmt: skip
    every = 1 if n_layers <= 12 else 4  # the column is narrow: a few layer labels, every layer on hover
    # The last layer is always labelled; a regular tick nearer it than half a step would overlap its label.
    layer_ticks = [*(t for t in range(0, n_layers, every) if n_layers - 1 - t >= every / 2), n_layers - 1]
    figure.update_xaxes(
        tickmode="array", tickvals=layer_ticks, ticktext=[f"L{i}" for i in layer_ticks],
        tickangle=-90, tickfont={"size": 9}, title="layer",
    )  # fmt: skip
    for layer in outlined:
        figure.add_vrect(x0=layer - 0.5, x1=layer + 0.5, line_color="black", line_width=1.5, fillcolor="rgba(0,0,0,0)")
    figure.update_layout(title=title, height=max(360, 20 * n_tokens + 150), margin={"l": 10, "r": 10, "t": 50})
    return figure


def role_shares_figure(shares: np.ndarray, categories: Sequence[str], title: str) -> go.Figure:
    """Stacked bars: attention mass per role in each layer."""
    figure = go.Figure()
    for index, category in enumerate(categories):
        if np.any(shares[:, index] > 0):
            figure.add_bar(
                x=[f"L{i}" for i in range(shares.shape[0])],
                y=shares[:, index],
                name=category,
                marker_color=CATEGORY_COLORS.get(category),
            )
    figure.update_layout(
        title=title, barmode="stack", yaxis_title="attention share", height=360, template="plotly_white"
    )
    return figure
