"""Clustering quality: the results grid as a sortable table and charts; MiniLM always visible (``filter_rows``)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from analysis.clustering import filter_rows, folder_cells, heatmap_frames, summary_tables
from analysis.plots import clustering_bars, clustering_heatmap
from workbench.state import REPO

st.title("Clustering quality")
folder = Path(st.text_input("Results folder", str(REPO / "results" / "local-track")).strip())
cells = folder_cells(folder, []) if (folder / "cells").is_dir() else []
if not cells:
    st.error(
        f"No clustering results under `{folder}`. Make them with "
        "`python -m analysis.clustering --preset default --out results/local-track`."
    )
    st.stop()
scores, stds = summary_tables(cells)
tasks = [c for c in scores.columns if c != "average"]
index = scores.index
left, middle, right, fourth = st.columns(4)
variants = left.multiselect("Model / adapter", sorted(set(index.get_level_values("variant"))), key="q_variants")
prompts = middle.multiselect("Prompt", sorted(set(index.get_level_values("prompt"))), key="q_prompts")
poolings = right.multiselect("Pooling", sorted(set(index.get_level_values("pooling"))), key="q_poolings")
shown_tasks = fourth.multiselect("Tasks", tasks, default=tasks, key="q_tasks") or tasks
view = filter_rows(scores, variants, prompts, poolings, shown_tasks)
st.caption(
    f"{len(view)} rows of {len(scores)}; V-measure, mean over k-means seeds; the average is over the tasks shown. "
    "Click a column header to sort."
)
st.dataframe(
    view,
    hide_index=True,
    width="stretch",
    column_config={t: st.column_config.NumberColumn(format="%.4f") for t in [*shown_tasks, "average"]},
)
st.plotly_chart(clustering_bars(view, ("prompt", "pooling")), key="q_bars")
st.plotly_chart(clustering_heatmap(*heatmap_frames(view, stds)), key="q_heat")
