"""Cluster explorer: UMAP of base and adapter embeddings side by side, coloured by label or k-means."""

from __future__ import annotations

import time

import streamlit as st

from analysis.plots import projection_scatter
from analysis.projections import UmapSettings, project_umap
from core.data import LOCAL_TASKS, DataError, file_columns, load_task, load_user_file, sample_dataset, save_upload
from core.metrics import kmeans_labels, score_embeddings
from workbench import state

st.title("Cluster explorer")
choice = state.model_choice()
encoder = state.load_encoder(choice)
if encoder is None:
    st.stop()

source = st.radio("Data", ["local task", "upload a file"], horizontal=True)
try:
    if source == "local task":
        left, right = st.columns(2)
        task = left.selectbox("Task (test split)", list(LOCAL_TASKS), index=list(LOCAL_TASKS).index("trec-coarse"))
        size = right.slider("Texts (seeded sample)", 100, 2000, 1000, step=100)
        dataset = sample_dataset(load_task(task, "test"), size)
    else:
        upload = st.file_uploader(
            "CSV, TSV, JSONL, JSON or parquet (max 20 MB)", type=["csv", "tsv", "jsonl", "json", "parquet"]
        )
        if upload is None:
            st.info("Upload a file with a text column and, optionally, a label column.")
            st.stop()
        path = save_upload(upload.name, upload.getvalue())
        columns = file_columns(path)
        left, right, third = st.columns(3)
        text_column = left.selectbox("Text column", columns, index=columns.index("text") if "text" in columns else 0)
        label_options = ["(none)", *columns]
        label_column = right.selectbox(
            "Label column", label_options, index=label_options.index("label") if "label" in columns else 0
        )
        size = third.slider("Texts (seeded sample)", 100, 2000, 1000, step=100)
        dataset = sample_dataset(
            load_user_file(path, text_column, None if label_column == "(none)" else label_column), size
        )
except (ValueError, DataError) as error:
    st.error(f"Cannot use this data: {error}")
    st.stop()
texts, labels = dataset.texts, dataset.labels

if len(texts) < 5:
    st.error(f"Only {len(texts)} texts with non-empty text: the explorer needs at least 5.")
    st.stop()
if labels is not None and len(set(labels)) < 2:
    st.warning("The label column has a single value: showing k-means clusters only, no V-measure.")
    labels = None

settings = state.embedding_settings("explore", default_prompt=state.adapter_prompt_name(encoder))
if settings is None:
    st.stop()
prompt, pooling, layer = settings
with st.expander("UMAP and colouring", expanded=False):
    a, b, c, d = st.columns(4)
    umap_settings = UmapSettings(
        n_neighbors=a.slider("n_neighbors", 2, 100, 15),
        min_dist=b.slider("min_dist", 0.0, 1.0, 0.1),
        seed=c.number_input("seed", 0, 10_000, 42),
    )
    colour_by = d.radio("Colour by", ["gold label", "k-means"] if labels else ["k-means"])
    n_labels = len(set(labels)) if labels else 8
    k = st.slider("k (k-means clusters)", 2, min(60, len(texts) - 1), min(n_labels, len(texts) - 1))
if len(texts) < max(k, 4):
    st.error(f"Only {len(texts)} texts: need at least {max(k, 4)} for {k} clusters and a 2-D projection.")
    st.stop()

sides = [("base", False), ("adapter", True)] if encoder.loaded.has_adapter else [("base", False)]
columns = st.columns(len(sides))
selected: list[int] = []
for column, (label, use_adapter) in zip(columns, sides, strict=True):
    with column:
        try:
            with st.spinner(f"Embedding {len(texts)} texts ({label})..."):
                vectors = encoder.encode(texts, prompt=prompt, pooling=pooling, layer=layer, use_adapter=use_adapter)
            started = time.perf_counter()
            with st.spinner("UMAP..."):
                points = project_umap(vectors, umap_settings)
            seconds = time.perf_counter() - started
        except ValueError as error:
            st.error(str(error))
            st.stop()
        clusters = kmeans_labels(vectors, k)
        colours = labels if colour_by == "gold label" and labels else [f"c{c}" for c in clusters]
        figure = projection_scatter(
            points, texts, colours, f"{label}", "label" if colour_by == "gold label" else "cluster"
        )
        event = st.plotly_chart(figure, key=f"umap_{label}", on_select="rerun", selection_mode=("lasso", "box"))
        if labels:
            score = score_embeddings(vectors, labels)
            st.metric(
                f"V-measure ({label})",
                f"{score['v_measure']:.4f}",
                help="mean over 5 k-means seeds, k = number of labels",
            )
        st.caption(f"UMAP {seconds:.2f} s (cached projections load instantly)")
        points_selected = (event or {}).get("selection", {}).get("points", []) if event else []
        selected += [int(p["customdata"]) for p in points_selected if "customdata" in p]
if not encoder.loaded.has_adapter:
    st.info(f"No adapter loaded: base only. Make one with `{state.TRAIN_COMMAND}`.")
if selected:
    unique = sorted(set(selected))
    st.subheader(f"{len(unique)} selected texts")
    st.dataframe(
        {"text": [texts[i] for i in unique], "label": [labels[i] for i in unique] if labels else [""] * len(unique)},
        width="stretch",
    )
else:
    st.caption("Draw a lasso or box on either plot to list the texts inside.")
