"""Cluster explorer: UMAP of base and adapter embeddings side by side, coloured by label or k-means.

Embedding a task runs on a button (with progress and ETA, and a Stop button) and is kept in the session for those
inputs, so UMAP and colour controls never re-embed. A selection in one plot highlights the same texts in the other.
"""

from __future__ import annotations

import time

import numpy as np
import streamlit as st

from analysis.plots import projection_scatter
from analysis.projections import UmapSettings, project_umap
from analysis.sides import embed_sides
from core.encoding.methods import METHOD_KINDS
from core.metrics import kmeans_labels, score_embeddings
from workbench import state, widgets

AUTO_TEXTS = 200  # up to this many texts embed without a click (seconds); more wait for the button

kmeans = st.cache_data(max_entries=8, show_spinner=False)(kmeans_labels)
score = st.cache_data(max_entries=8, show_spinner="k-means over 5 seeds...")(score_embeddings)

choice = state.model_choice()
widgets.header("Cluster explorer", choice)
encoder = state.load_encoder(choice)
if encoder is None:
    st.stop()
dataset = widgets.pick_dataset("explore")
texts, labels = dataset.texts, dataset.labels
if len(texts) < 5:
    st.error(f"Only {len(texts)} texts with non-empty text: the explorer needs at least 5.")
    st.stop()
if labels is not None and len(set(labels)) < 2:
    st.warning("The label column has a single value: showing k-means clusters only, no V-measure.")
    labels = None
settings = state.embedding_settings("explore", encoder, methods=METHOD_KINDS)
view = state.configured_encoder(encoder, settings) if settings is not None else None
if view is None:
    st.stop()
with st.expander("UMAP and colouring", expanded=False):
    a, b, c, d = st.columns(4)
    umap_settings = UmapSettings(
        n_neighbors=a.slider("n_neighbors", 2, 100, **state.kept("explore_neighbors", 15)),
        min_dist=b.slider("min_dist", 0.0, 1.0, **state.kept("explore_min_dist", 0.1)),
        seed=int(c.number_input("seed", 0, 10_000, **state.kept("explore_seed", 42))),
    )
    modes = ["gold label", "k-means"] if labels else ["k-means"]
    colour_by = d.radio("Colour by", modes, **state.kept("explore_colour", modes[0], options=modes))
    top = min(60, len(texts) - 1)
    k_start = min(len(set(labels or [])) or 8, top)
    k = st.slider("k (k-means clusters)", 2, top, **state.kept("explore_k", k_start, bounds=(2, top)))
if len(texts) < max(k, 4):
    st.error(f"Only {len(texts)} texts: need at least {max(k, 4)} for {k} clusters and a 2-D projection.")
    st.stop()
widgets.truncation_note(view, texts)

sides = [("base", False), ("adapter", True)] if encoder.loaded.has_adapter else [("base", False)]
inputs = (choice, dataset.sha256, settings)
embedded = st.session_state.setdefault("explore_vectors", {})
STOPPED = "explore_stopped"
if inputs not in embedded:
    stopped = widgets.was_stopped(STOPPED, inputs)
    if (len(texts) > AUTO_TEXTS or stopped) and not st.button("Embed and project", type="primary"):
        if stopped:
            st.warning("Embedding stopped. The texts embedded before the stop are in the disk cache: *Embed and "
                       "project* goes on from there.")  # fmt: skip
        else:
            st.info(f"{len(texts)} texts x {len(sides)} to embed with {choice.label}: press *Embed and project* "
                    "(texts in the disk cache load at once). A smaller sample is quicker.")  # fmt: skip
        st.stop()
    widgets.clear_stopped(STOPPED)
    stop = widgets.stop_button(STOPPED, inputs)
    bar = st.progress(0.0)
    try:  # base and adapter from one shared-trunk pass
        vectors = embed_sides(view, texts, widgets.progress_with_eta(bar, " + ".join(side for side, _ in sides)))
    except ValueError as error:
        st.error(str(error))
        st.stop()
    bar.empty()
    stop.empty()
    embedded.clear()  # one task's vectors at a time: the session stays small
    embedded[inputs] = vectors
vectors = embedded[inputs]

selected = {side: widgets.selected_points(f"umap_{side}") for side, _ in sides}
st.caption(f"{len(texts)} texts shown ({dataset.name}).")
stem = widgets.file_stem("umap", choice.model, dataset.name.split(" ")[0], *state.setting_stem(settings))
for column, (side, _) in zip(st.columns(len(sides)), sides, strict=True):
    with column:
        started = time.perf_counter()
        with st.spinner("UMAP..."):
            points = project_umap(vectors[side], umap_settings)
        seconds = time.perf_counter() - started
        clusters = kmeans(vectors[side], k)
        colours = labels if colour_by == "gold label" and labels else [f"c{c}" for c in clusters]
        others = sorted({i for other, chosen in selected.items() if other != side for i in chosen})
        figure = projection_scatter(
            points, texts, colours, f"{side}: UMAP", "gold label" if colour_by == "gold label" else "k-means cluster",
            highlight=others or None,
        )  # fmt: skip
        st.plotly_chart(figure, key=f"umap_{side}", on_select="rerun", selection_mode=("lasso", "box"))
        if labels:
            result = score(vectors[side], labels)
            st.metric(
                f"V-measure ({side})", f"{result['v_measure']:.4f} ± {result['v_measure_std']:.4f}",
                help=f"mean ± std over {len(result['v_measure_per_seed'])} k-means seeds, k = number of labels",
            )  # fmt: skip
        st.caption(f"UMAP {seconds:.2f} s (cached projections load instantly)")
        table = {"x": points[:, 0], "y": points[:, 1], "text": texts, "label": labels or [""] * len(texts)}
        widgets.downloads_row(
            [
                ("figure", (figure, f"{stem}_{side}", f"dl_{side}")),
                ("table", ({**table, "kmeans": clusters}, f"{stem}_{side}_points", f"csv_{side}", "points CSV")),
                ("array", (np.asarray(vectors[side]), f"{stem}_{side}_vectors", f"npy_{side}", "vectors NPY")),
            ]
        )
if not encoder.loaded.has_adapter:
    st.info(f"No adapter loaded: base only. Make one with `{state.TRAIN_COMMAND}`.")
unique = sorted({i for chosen in selected.values() for i in chosen})
if unique:
    st.subheader(f"{len(unique)} selected texts (highlighted in the other plot)")
    rows = {"text": [texts[i] for i in unique], "label": [labels[i] for i in unique] if labels else [""] * len(unique)}
    st.dataframe(rows, width="stretch")
else:
    st.caption("Draw a lasso or box on either plot to list the texts inside and highlight them in the other.")
