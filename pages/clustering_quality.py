"""Clustering quality: the results grid as a sortable table and charts; MiniLM always visible."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from analysis.clustering import BASELINE_MODEL, folder_cells, summary_tables
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
table = scores.reset_index()
tasks = [c for c in scores.columns if c != "average"]
left, middle, right, fourth = st.columns(4)
variants = left.multiselect("Model / adapter", sorted(set(table["variant"])), key="q_variants")
prompts = middle.multiselect("Prompt", sorted(set(table["prompt"])), key="q_prompts")
poolings = right.multiselect("Pooling", sorted(set(table["pooling"])), key="q_poolings")
shown_tasks = fourth.multiselect("Tasks", tasks, default=tasks, key="q_tasks") or tasks
keep = table["variant"] == BASELINE_MODEL  # the baseline stays whatever the filters say
chosen = (
    (table["variant"].isin(variants) if variants else True)
    & (table["prompt"].isin(prompts) if prompts else True)
    & (table["pooling"].isin(poolings) if poolings else True)
)
view = table[keep | chosen].copy()
view["average"] = view[shown_tasks].mean(axis=1, skipna=False)
view = view[["variant", "prompt", "pooling", "layer", *shown_tasks, "average"]].sort_values("average", ascending=False)
st.caption(
    f"{len(view)} rows of {len(table)}; V-measure, mean over k-means seeds; the average is over the tasks shown. "
    "Click a column header to sort."
)
st.dataframe(
    view,
    hide_index=True,
    width="stretch",
    column_config={t: st.column_config.NumberColumn(format="%.4f") for t in [*shown_tasks, "average"]},
)
st.plotly_chart(clustering_bars(view, ("prompt", "pooling")), key="q_bars")
heat = view.set_index(["variant", "prompt", "pooling", "layer"])[shown_tasks]
heat.index = [" | ".join(map(str, i)) for i in heat.index]
spread = stds.reset_index().set_index(["variant", "prompt", "pooling", "layer"])[shown_tasks]
spread.index = [" | ".join(map(str, i)) for i in spread.index]
st.plotly_chart(clustering_heatmap(heat, spread.reindex(heat.index)), key="q_heat")
