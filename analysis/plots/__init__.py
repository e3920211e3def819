"""Plotly figures for the analyses: pure functions, data in, ``go.Figure`` out (no model access).

Owns one module per subject (``clustering``, ``attention``, ``attribution``, ``faithfulness``, ``similarity``,
``projections``, ``training``), the colours they share (``style``) and the one place figures reach disk
(``output.write_figures``: HTML always, PNG where kaleido can render). Every figure function is re-exported here,
so pages and reports import ``from analysis.plots import ...``.
May import: ``core.runtime`` (PNG export through the browser), plotly, numpy, pandas; no other analysis module.
"""

from __future__ import annotations

from analysis.plots.attention import (
    attention_heatmap,
    base_shares_figure,
    head_heatmap_figure,
    layer_shift_figure,
    report_figures,
    role_shares_figure,
    token_bars_figure,
)
from analysis.plots.attribution import attribution_bars_figure, pair_matrix_figure
from analysis.plots.clustering import (
    clustering_bars,
    clustering_heatmap,
    group_colours,
    quality_bars,
    track_gain_scatter,
)
from analysis.plots.faithfulness import (
    CURVE_LABELS,
    METHOD_COLORS,
    faithfulness_figures,
    perturbation_curves_figure,
    text_curves_figure,
)
from analysis.plots.output import png_bytes, write_figures
from analysis.plots.projections import DISTINCT_COLORS, projection_scatter
from analysis.plots.similarity import similarity_heatmap
from analysis.plots.style import CATEGORY_COLORS
from analysis.plots.training import training_curve

__all__ = [
    "CATEGORY_COLORS",
    "CURVE_LABELS",
    "DISTINCT_COLORS",
    "METHOD_COLORS",
    "attention_heatmap",
    "attribution_bars_figure",
    "base_shares_figure",
    "clustering_bars",
    "clustering_heatmap",
    "faithfulness_figures",
    "group_colours",
    "head_heatmap_figure",
    "layer_shift_figure",
    "pair_matrix_figure",
    "perturbation_curves_figure",
    "png_bytes",
    "projection_scatter",
    "quality_bars",
    "report_figures",
    "role_shares_figure",
    "similarity_heatmap",
    "text_curves_figure",
    "token_bars_figure",
    "track_gain_scatter",
    "training_curve",
    "write_figures",
]
