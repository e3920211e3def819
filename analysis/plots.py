"""Plotly figures for the analyses: pure functions, data in, ``go.Figure`` out (no model access).

``write_figures`` is the one function that touches disk: HTML always, PNG where kaleido can render
(kaleido 1.x drives a Chrome/Chromium; offline it cannot download one, so it needs Debian's chromium).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.runtime.browser import configure_png_export


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


# ----- attention and attribution

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


def _ci_band(x: Sequence[int], low: Sequence[float], high: Sequence[float], color: str, group: str) -> go.Scatter:
    """A shaded confidence band (no legend entry of its own) that toggles with its ``group``'s line."""
    x = list(x)
    return go.Scatter(
        x=x + x[::-1],
        y=list(high) + list(low)[::-1],
        fill="toself",
        fillcolor=_rgba(color, 0.15),
        line={"width": 0},
        hoverinfo="skip",
        showlegend=False,
        legendgroup=group,
    )


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def layer_shift_figure(per_layer: Mapping[str, Mapping[str, Sequence[float]]], title: str) -> go.Figure:
    """Mean shift per layer and category with its confidence band: ``{category: {mean, ci_low, ci_high}}``."""
    figure = go.Figure()
    for category, stats in per_layer.items():
        color = CATEGORY_COLORS.get(category, "#333333")
        layers = list(range(len(stats["mean"])))
        figure.add_trace(_ci_band(layers, stats["ci_low"], stats["ci_high"], color, category))
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


def png_bytes(figure: go.Figure, scale: float = 1) -> bytes:
    """The figure as PNG, rendered by kaleido in Debian's chromium (see core.runtime.browser)."""
    configure_png_export()
    return figure.to_image(format="png", scale=scale)


def write_figures(figures: Mapping[str, go.Figure], out_dir: str | Path, png: bool = True) -> dict[str, Any]:
    """Write each figure as HTML (plotly.min.js written once beside them: opens offline) and PNG where kaleido works."""
    from plotly.offline import get_plotlyjs

    from core.runtime.files import atomic_write

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Any] = {"html": [], "png": [], "png_error": None}
    # Every file is written atomically: a run killed while writing leaves the old file or none, never half of one.
    bundle, script = out / "plotly.min.js", get_plotlyjs()
    if not bundle.is_file() or bundle.stat().st_size != len(script.encode()):
        with atomic_write(bundle) as handle:
            handle.write(script)
    for stem, figure in figures.items():
        with atomic_write(out / f"{stem}.html") as handle:
            handle.write(figure.to_html(include_plotlyjs="directory"))
        written["html"].append(f"{stem}.html")
        if png and written["png_error"] is None:
            try:
                image = png_bytes(figure)
            except Exception as error:  # kaleido raises several types when Chrome is missing
                written["png_error"] = " ".join(str(error).split())[:200] or type(error).__name__
                continue
            with atomic_write(out / f"{stem}.png", "wb") as handle:
                handle.write(image)
            written["png"].append(f"{stem}.png")
    return written


# ----- workbench pages


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


# Kelly's colours of maximum contrast (white dropped): no two look alike, unlike plotly's default cycle.
DISTINCT_COLORS = (
    "#F3C300", "#875692", "#F38400", "#A1CAF1", "#BE0032", "#C2B280", "#848482", "#008856", "#E68FAC", "#0067A5",
    "#F99379", "#604E97", "#F6A600", "#B3446C", "#DCD300", "#882D17", "#8DB600", "#654522", "#E25822", "#2B3D26",
    "#222222",
)  # fmt: skip


def projection_scatter(
    points: np.ndarray,
    texts: Sequence[str],
    colours: Sequence[str],
    title: str,
    colour_title: str = "label",
    highlight: Sequence[int] | None = None,
) -> go.Figure:
    """A 2-D projection, one trace per colour group (so the legend filters), the text on hover.

    Groups get :data:`DISTINCT_COLORS` in order (they repeat after 21 groups). ``highlight``: text indices
    shown selected (the rest faded), e.g. a selection made in another plot of the same texts.
    """
    figure = go.Figure()
    colours = [str(c) for c in colours]
    short = [t if len(t) <= 160 else t[:159] + "…" for t in texts]
    chosen = set(highlight) if highlight else None
    for number, group in enumerate(sorted(set(colours), key=lambda g: (len(g), g))):
        index = [i for i, c in enumerate(colours) if c == group]
        figure.add_scattergl(
            x=points[index, 0],
            y=points[index, 1],
            mode="markers",
            name=group,
            marker={"size": 5, "opacity": 0.8, "color": DISTINCT_COLORS[number % len(DISTINCT_COLORS)]},
            customdata=np.array(index),
            hovertext=[short[i] for i in index],
            hovertemplate="%{hovertext}<extra>" + group + "</extra>",
            selectedpoints=None if chosen is None else [n for n, i in enumerate(index) if i in chosen],
            selected={"marker": {"size": 9, "opacity": 1.0}},
            unselected={"marker": {"opacity": 0.12}},
        )
    figure.update_layout(
        title=title, height=520, legend_title=colour_title, dragmode="lasso", margin={"l": 10, "r": 10, "t": 50}
    )
    figure.update_xaxes(showticklabels=False)
    figure.update_yaxes(showticklabels=False)
    return figure


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
    layer_ticks = sorted({*range(0, n_layers, every), n_layers - 1})
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


# ----- faithfulness (analysis.faithfulness) and token-pair attribution (analysis.attribution.token_pairs)

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
            _ci_band(banded, [stats["ci_low"][k] for k in banded], [stats["ci_high"][k] for k in banded], color, method)
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
