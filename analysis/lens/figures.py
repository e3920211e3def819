"""Figures of the lens report and the Lens page (plotly), and their writer (HTML + PNG where kaleido works)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

__all__ = [
    "alignment_figure",
    "cka_figure",
    "label_free_figure",
    "layer_profile_figure",
    "report_figures",
    "top_tokens_figure",
]

VARIANT_COLORS = {"base": "#1f77b4", "adapter": "#d62728"}
POOLING_DASH = {"last": "solid", "mean": "dash", "eos": "dot", "weighted": "dashdot", "text_mean": "longdash"}
VIEW_TITLES = {"raw": "raw lens", "pc_removed": "first principal component removed"}


def _band(x: Sequence[int], low: Sequence[float], high: Sequence[float], color: str, group: str) -> go.Scatter:
    r, g, b = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    x = list(x)
    return go.Scatter(
        x=x + x[::-1], y=list(high) + list(low)[::-1], fill="toself", fillcolor=f"rgba({r},{g},{b},0.15)",
        line={"width": 0}, hoverinfo="skip", showlegend=False, legendgroup=group,
    )  # fmt: skip


def layer_profile_figure(profile: Mapping[str, Any], title: str | None = None) -> go.Figure:
    """V-measure per layer for every pooling, base and adapter (± k-means seed std); each variant's best marked."""
    figure = go.Figure()
    layers = profile["layers"]
    for variant, section in profile["variants"].items():
        color = VARIANT_COLORS.get(variant, "#333333")
        for pooling, rows in section["poolings"].items():
            if "v_measure" not in rows:
                continue
            figure.add_trace(
                go.Scatter(
                    x=layers, y=rows["v_measure"], mode="lines+markers", name=f"{variant} · {pooling}",
                    line={"color": color, "dash": POOLING_DASH.get(pooling, "solid")}, marker={"size": 4},
                    error_y={"type": "data", "array": rows["v_measure_std"], "visible": True, "thickness": 1},
                )
            )  # fmt: skip
        best = section.get("best")
        if best:
            figure.add_trace(
                go.Scatter(
                    x=[best["layer"]], y=[best["v_measure"]], mode="markers+text", showlegend=False,
                    marker={"symbol": "star", "size": 16, "color": color, "line": {"color": "black", "width": 1}},
                    text=[f"best {variant}: {best['pooling']} L{best['layer']}"],
                    textposition="top center" if variant == "adapter" else "bottom center",
                )
            )  # fmt: skip
    task = profile.get("task", "")
    figure.update_layout(
        title=title or f"Layer profile: V-measure on {task} (hidden state 0 = embeddings)",
        xaxis_title="hidden state (layer)", yaxis_title="V-measure", template="plotly_white", height=520,
    )  # fmt: skip
    return figure


def label_free_figure(profile: Mapping[str, Any], pooling: str) -> go.Figure:
    """Anisotropy, effective rank, alignment and uniformity per layer for one pooling, base vs adapter."""
    names = [m for m in ("anisotropy", "effective_rank", "alignment", "uniformity")
             if m in next(iter(profile["variants"].values()))["poolings"][pooling]]  # fmt: skip
    figure = make_subplots(rows=1, cols=len(names), subplot_titles=names)
    for variant, section in profile["variants"].items():
        rows = section["poolings"][pooling]
        for column, name in enumerate(names, start=1):
            figure.add_trace(
                go.Scatter(x=profile["layers"], y=rows[name], mode="lines", name=variant, legendgroup=variant,
                           showlegend=column == 1, line={"color": VARIANT_COLORS.get(variant, "#333333")}),
                row=1, col=column,
            )  # fmt: skip
    figure.update_layout(title=f"Label-free geometry per layer ({pooling} pooling)", template="plotly_white")
    return figure


def alignment_figure(lens: Mapping[str, Any], view: str = "raw", measure: str = "hit_rate") -> go.Figure:
    """Key-token alignment per layer with its bootstrap CI band, base and adapter."""
    figure = go.Figure()
    layers = lens["layers"]
    section = lens["views"][view]
    for variant, color in VARIANT_COLORS.items():
        if variant not in section:
            continue
        stats = section[variant][measure]
        figure.add_trace(_band(layers, stats["ci_low"], stats["ci_high"], color, variant))
        figure.add_trace(go.Scatter(x=layers, y=stats["mean"], mode="lines+markers", name=variant,
                                    legendgroup=variant, line={"color": color}))  # fmt: skip
    label = {"hit_rate": f"share of content tokens in top-{lens['top_k']}", "any_hit": f"hit@{lens['top_k']}"}
    figure.update_layout(
        title=f"Key-token alignment per layer ({VIEW_TITLES.get(view, view)})", xaxis_title="hidden state (layer)",
        yaxis_title=label.get(measure, measure), template="plotly_white",
    )  # fmt: skip
    return figure


def cka_figure(geometry: Mapping[str, Any]) -> go.Figure:
    """Linear CKA between base and adapter vectors at every layer, with its bootstrap CI."""
    cka = geometry["cka_per_layer"]
    figure = go.Figure()
    figure.add_trace(_band(cka["layers"], cka["ci_low"], cka["ci_high"], "#2ca02c", "cka"))
    figure.add_trace(go.Scatter(x=cka["layers"], y=cka["value"], mode="lines+markers", name="CKA",
                                line={"color": "#2ca02c"}, legendgroup="cka"))  # fmt: skip
    figure.update_layout(
        title=f"Linear CKA, base vs adapter ({geometry['pooling']} pooling): 1 = the LoRA left the layer's geometry",
        xaxis_title="hidden state (layer)", yaxis_title="linear CKA", template="plotly_white",
    )  # fmt: skip
    return figure


def top_tokens_figure(layers: Sequence[int], top: Sequence[Sequence[Sequence[Any]]], title: str) -> go.Figure:
    """A (layer x rank) grid of the lens's top tokens, coloured by probability: ``top[layer] = [(token, p), ...]``."""
    probs = [[float(p) for _, p in row] for row in top]
    text = [[repr(str(t))[1:-1] for t, _ in row] for row in top]
    k = max((len(row) for row in top), default=0)
    figure = go.Figure(
        go.Heatmap(
            z=probs, x=[f"#{i + 1}" for i in range(k)], y=[str(layer) for layer in layers], text=text,
            texttemplate="%{text}", colorscale="Blues", zmin=0, colorbar={"title": "p"},
            hovertemplate="layer %{y}, %{x}: %{text} (p=%{z:.3f})<extra></extra>",
        )
    )  # fmt: skip
    figure.update_layout(title=title, xaxis_title="rank", yaxis_title="hidden state (layer)",
                         template="plotly_white", height=max(360, 22 * len(layers)))  # fmt: skip
    return figure


def report_figures(report: Mapping[str, Any]) -> dict[str, go.Figure]:
    """Every figure of a lens report, by file stem."""
    figures: dict[str, go.Figure] = {}
    pooling = report["settings"]["lens_pooling"]
    for task, profile in report.get("profiles", {}).items():
        figures[f"profile_{task}"] = layer_profile_figure(profile)
        figures[f"geometry_{task}"] = label_free_figure(profile, pooling)
    lens = report.get("lens")
    if lens:
        for view in lens["views"]:
            figures[f"alignment_{view}"] = alignment_figure(lens, view)
        for index, example in enumerate(lens.get("examples", [])[:1]):
            for variant in ("base", "adapter"):
                if variant in example:
                    title = f"{variant}: top tokens per layer for {example['text'][:60]!r}"
                    figures[f"tokens_{index}_{variant}"] = top_tokens_figure(lens["layers"], example[variant]["raw"],
                                                                             title)  # fmt: skip
    if "geometry" in report:
        figures["cka"] = cka_figure(report["geometry"])
    return figures
