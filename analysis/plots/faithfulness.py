"""Figures of the faithfulness report: deletion and insertion curves per method, one text's curves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

from analysis.plots.style import ci_band

__all__ = ["CURVE_LABELS", "METHOD_COLORS", "faithfulness_figures", "perturbation_curves_figure", "text_curves_figure"]


METHOD_COLORS = {
    "attention_last": "#1f77b4",
    "attention_peak": "#17becf",
    "rollout": "#9467bd",
    "integrated_gradients": "#d62728",
    "gradient_x_input": "#ff7f0e",
    "random": "#7f7f7f",
}
CURVE_LABELS = {
    "deletion": "1 - cosine to the original",
    "insertion": "1 - cosine to the original",
    "sim_deletion": "|change of the cosine to the partner|",
    "sim_insertion": "|change of the cosine to the partner|",
}


def perturbation_curves_figure(curves: Mapping[str, Mapping[str, Sequence[float | None]]], title: str, measure: str):
    """Mean curve per method over k with its 95% band: ``{method: {mean, ci_low, ci_high, n}}``."""
    figure = go.Figure()
    for method, stats in curves.items():
        color = METHOD_COLORS.get(method, "#333333")
        steps = list(range(len(stats["mean"])))
        banded = [k for k in steps if stats["ci_low"][k] is not None]
        figure.add_trace(
            ci_band(banded, [stats["ci_low"][k] for k in banded], [stats["ci_high"][k] for k in banded], color, method)
        )
        figure.add_trace(
            go.Scatter(
                x=steps,
                y=list(stats["mean"]),
                customdata=list(stats.get("n", [None] * len(steps))),
                mode="lines+markers",
                name=method,
                legendgroup=method,
                line={"color": color, "dash": "dot" if method == "random" else "solid"},
                hovertemplate="k=%{x}: %{y:.4f} (n=%{customdata})<extra>" + method + "</extra>",
            )
        )
    kind = "removed" if measure.endswith("deletion") else "put back"
    figure.update_layout(
        title=title,
        xaxis_title=f"content tokens {kind} (k)",
        yaxis_title=CURVE_LABELS.get(measure, measure),
        template="plotly_white",
    )
    return figure


def faithfulness_figures(report: Mapping[str, Any]) -> dict[str, go.Figure]:
    """Deletion and insertion curves per setting of an ``analysis.faithfulness`` report, by file stem."""
    figures: dict[str, go.Figure] = {}
    for label in ("base", "adapter"):
        summary = report.get(label)
        if not summary:
            continue
        for measure in ("deletion", "insertion", "sim_deletion", "sim_insertion"):
            curves = {method: entry["curves"][measure] for method, entry in summary["methods"].items()}
            title = f"{label}: {measure.replace('_', ' ')} curves, mean and 95% CI, n={summary['n_texts']} texts"
            figures[f"{measure}_{label}"] = perturbation_curves_figure(curves, title, measure)
    return figures


def text_curves_figure(record: Mapping[str, Any], title: str, measure: str = "deletion") -> go.Figure:
    """One text's curve per method (``analysis.faithfulness.report.text_curves`` record), AOPC in the legend."""
    curves = {}
    for method, entry in record["methods"].items():
        values = entry["curves"][measure]
        curves[f"{method} (AOPC {entry[f'aopc_{measure}']:.3f})"] = {
            "mean": values,
            "ci_low": [None] * len(values),
            "ci_high": [None] * len(values),
            "n": [1] * len(values),
        }
    figure = perturbation_curves_figure(curves, title, measure)
    for trace in figure.data:  # colours by method name, before the AOPC suffix
        method = (trace.legendgroup or "").split(" (")[0]
        if trace.mode and method in METHOD_COLORS:
            trace.line.color = METHOD_COLORS[method]
    return figure
