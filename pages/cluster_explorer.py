"""Cluster explorer: two embeddings of the same texts, side by side: which texts moved, where to, and what the
clusters are about.

Two sources: base vs adapter of the sidebar's model (embedded on a button, with progress, ETA and Stop, kept in
the session so no control re-embeds), or two saved ``core.embed`` runs of one text file (two models, methods,
layers). The two UMAPs are Procrustes-aligned; points are coloured by label, k-means or neighbour overlap
(Jaccard@k); the biggest movers, c-TF-IDF cluster names and a query search sit below. Layouts and neighbour
tables are cached on disk by content, so 20,000 points revisit in seconds.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import streamlit as st

from analysis.clustering.uncertainty import silhouette_ci
from analysis.neighbours import CentroidReader, cluster_names, movers, neighbourhood_diff, search
from analysis.neighbours.figures import add_arrows, add_cluster_names, value_scatter
from analysis.neighbours.report import neighbour_rows
from analysis.plots import projection_scatter
from analysis.projections import UmapSettings, procrustes_align, project_umap
from analysis.sides import embed_sides
from core.encoding.methods import METHOD_KINDS
from core.metrics import kmeans_labels, score_embeddings
from core.runtime.errors import LensError
from workbench import state, widgets

AUTO_TEXTS = 200  # up to this many texts embed without a click (seconds); more wait for the button
MAX_TEXTS = 20_000  # the explorer's largest sample: WebGL plots and disk-cached layouts keep this interactive
BASE_VS_ADAPTER, TWO_RUNS = "base vs adapter", "two saved runs"
OVERLAP = "neighbour overlap"

kmeans = st.cache_data(max_entries=8, show_spinner=False)(kmeans_labels)
score = st.cache_data(max_entries=8, show_spinner="k-means over 5 seeds...")(score_embeddings)
diff_of = st.cache_data(max_entries=4, show_spinner="Neighbour lists of both spaces...")(neighbourhood_diff)
silhouette = st.cache_data(max_entries=8, show_spinner="Silhouette...")(silhouette_ci)


@st.cache_data(max_entries=8, show_spinner=False)
def names_of(texts, clusters, n, vectors, reader_key, _reader: CentroidReader | None):
    """Cluster names, cached by the inputs and ``reader_key`` (the reader itself is not hashable)."""
    return cluster_names(texts, clusters, n, vectors=vectors, centroid_reader=_reader)


def centroid_reader(encoder, setting) -> tuple[tuple | None, CentroidReader | None]:
    """The lens's reading of a centroid through the final norm and LM head, for a decoder (else None), and its key."""
    from analysis.lens.vocabulary import vector_reader

    loaded = encoder.loaded
    if not loaded.is_causal:
        return None, None
    final = setting.layer.indices(encoder.num_hidden_states) == (encoder.num_hidden_states - 1,)
    return (loaded.name, loaded.weights_hash, final), vector_reader(loaded, already_normed=final)


@st.cache_data(max_entries=2, show_spinner="Reading the two runs...")
def read_pair(first: str, second: str, texts: str, text_column: str, label_column: str | None, stamp: tuple):
    """The runs (cached by paths and modification times: ``stamp``)."""
    from analysis.neighbours import load_pair

    return load_pair(first, second, texts, text_column, label_column)


def stamp(*paths: str) -> tuple:
    return tuple(Path(p).stat().st_mtime_ns if Path(p).is_file() else 0 for p in paths)


def from_adapter(choice: state.ModelChoice):
    """Texts, labels, side names, a function giving ``{side: vectors}`` (embedding on a button, after the page's
    controls are drawn), a query embedder and file-name parts, from the sidebar's model."""
    encoder = state.load_encoder(choice)
    if encoder is None:
        st.stop()
    dataset = widgets.pick_dataset("explore", max_texts=MAX_TEXTS)
    texts, labels = dataset.texts, dataset.labels
    if len(texts) < 5:
        st.error(f"Only {len(texts)} texts with non-empty text: the explorer needs at least 5.")
        st.stop()
    settings = state.embedding_settings("explore", encoder, methods=METHOD_KINDS)
    view = state.configured_encoder(encoder, settings) if settings is not None else None
    if view is None:
        st.stop()
    widgets.truncation_note(view, texts)
    sides = ["base", "adapter"] if encoder.loaded.has_adapter else ["base"]

    def embedded_vectors() -> dict[str, np.ndarray]:
        """The kept vectors of these inputs, or embedding them now (on the button beyond AUTO_TEXTS texts)."""
        inputs = (choice, dataset.sha256, settings)
        embedded = st.session_state.setdefault("explore_vectors", {})
        stopped_flag = "explore_stopped"
        if inputs in embedded:
            return embedded[inputs]
        stopped = widgets.was_stopped(stopped_flag, inputs)
        if (len(texts) > AUTO_TEXTS or stopped) and not widgets.start_button("Embed and project", stopped_flag, inputs):
            if stopped:
                st.warning("Embedding stopped. The texts embedded before the stop are in the disk cache: *Embed "
                           "and project* goes on from there.")  # fmt: skip
            else:
                st.info(f"{len(texts)} texts x {len(sides)} to embed with {choice.label}: press *Embed and "
                        "project* (texts in the disk cache load at once). A smaller sample is quicker.")  # fmt: skip
            st.stop()
        widgets.clear_stopped(stopped_flag)
        stop = widgets.stop_button(stopped_flag, inputs)
        bar = st.progress(0.0)
        try:  # base and adapter from one shared-trunk pass
            vectors = embed_sides(view, texts, widgets.progress_with_eta(bar, " + ".join(sides)))
        except ValueError as error:
            st.error(str(error))
            st.stop()
        bar.empty()
        stop.empty()
        embedded.clear()  # one task's vectors at a time: the session stays small
        embedded[inputs] = vectors
        return vectors

    if not encoder.loaded.has_adapter:
        st.info(f"No adapter loaded: base only. Make one with `{state.TRAIN_COMMAND}`.")

    def embed_query(query: str) -> dict[str, np.ndarray]:
        return {side: view.encode([query], use_adapter=side == "adapter")[0] for side in sides}

    name = dataset.name  # a local task's name, or the uploaded file's (file_stem makes it a safe file name)
    reader_key, reader = centroid_reader(encoder, settings)
    stem = (choice.model, name, *state.setting_stem(settings))
    return texts, labels, sides, embedded_vectors, embed_query, stem, reader_key, reader


def from_runs(choice: state.ModelChoice):
    """As :func:`from_adapter`, from two saved runs named in text boxes."""
    from analysis.neighbours.runs import query_settings

    st.caption("Two outputs of `python -m core.embed` (a `.npy` with its `.json` beside it) made from the same text "
               "file, e.g. two models, methods or layers; refused when the texts differ.")  # fmt: skip
    a, b = st.columns(2)
    first = a.text_input("Run A (.npy)", **state.kept("explore_run_a", "", url="run_a")).strip()
    second = b.text_input("Run B (.npy)", **state.kept("explore_run_b", "", url="run_b")).strip()
    a, b, c = st.columns([2, 1, 1])
    text_file = a.text_input("Text file both runs embedded", **state.kept("explore_texts", "", url="texts")).strip()
    text_column = b.text_input("Text column", **state.kept("explore_text_column", "text", url="text_col")).strip()
    label_column = c.text_input("Label column (optional)", **state.kept("explore_label_column", "", url="label_col"))
    if not (first and second and text_file):
        st.info("Name both runs and the text file they embedded.")
        st.stop()
    try:
        pair = read_pair(first, second, text_file, text_column or "text", label_column.strip() or None,
                         stamp(first, second, text_file))  # fmt: skip
    except LensError as error:
        st.error(f"Cannot compare these runs: {error}")
        st.stop()
    names = pair.names

    def embed_query(query: str) -> dict[str, np.ndarray]:
        encoder = state.load_encoder(choice)
        if encoder is None:
            st.stop()
        loaded = encoder.loaded
        identities = (loaded.identity(False), loaded.identity(True) if loaded.has_adapter else None)
        out = {}
        for name, run in zip(names, pair.runs, strict=True):
            how = query_settings(run, *identities)
            use_adapter = how.pop("use_adapter")
            view = encoder.with_setting(**how)
            out[name] = view.encode([query], use_adapter=use_adapter)[0]
        return out

    spaces = {name: run.vectors for name, run in zip(names, pair.runs, strict=True)}
    # No centroid reading: the runs' vectors may come from another model than the one loaded.
    return pair.texts, pair.labels, list(names), lambda: spaces, embed_query, ("runs", *names), None, None


choice = state.model_choice()
widgets.header("Cluster explorer", choice)
sources = [BASE_VS_ADAPTER, TWO_RUNS]
source = st.radio("Compare", sources, horizontal=True, **state.kept("explore_compare", sources[0], url="compare"))
texts, labels, sides, embedded_vectors, embed_query, stem_parts, reader_key, reader = (
    from_adapter if source == BASE_VS_ADAPTER else from_runs
)(choice)
if labels is not None and len(set(labels)) < 2:
    st.warning("The label column has a single value: showing k-means clusters only, no V-measure.")
    labels = None
paired = len(sides) == 2
with st.expander("UMAP and colouring", expanded=False):
    a, b, c, d = st.columns(4)
    umap_settings = UmapSettings(
        n_neighbors=a.slider("n_neighbors", 2, 100, **state.kept("explore_neighbors", 15)),
        min_dist=b.slider("min_dist", 0.0, 1.0, **state.kept("explore_min_dist", 0.1)),
        seed=int(c.number_input("seed", 0, 10_000, **state.kept("explore_seed", 42))),
    )
    modes = (["gold label"] if labels else []) + ["k-means"] + ([OVERLAP] if paired else [])
    colour_by = d.radio("Colour by", modes, **state.kept("explore_colour", modes[0], options=modes, url="colour"))
    top = min(60, len(texts) - 1)
    k_start = min(len(set(labels or [])) or 8, top)
    # New data (e.g. an upload with another label count) starts k at its label count again.
    state.follow("explore_k", k_start, (len(texts), tuple(sorted(set(labels))) if labels else None))
    k = st.slider("k (k-means clusters)", 2, top, **state.kept("explore_k", k_start, bounds=(2, top)))
    a, b, c = st.columns(3)
    nk_top = min(50, len(texts) - 1)
    neighbours_k = a.slider(
        "Neighbours per text (Jaccard@k)", 1, nk_top, **state.kept("explore_nk", min(10, nk_top), bounds=(1, nk_top),
                                                                   url="nk"),
    )  # fmt: skip
    aligned = b.toggle("Align the second layout to the first", **state.kept("explore_align", True, url="align"))
    named = c.toggle("Cluster names on the plots", **state.kept("explore_names", True, url="names"))
    linked = st.toggle(
        "Linked view: both aligned layouts in one figure; hovering a text rings its twin (sends plotly.js again)",
        **state.kept("explore_linked", False, url="linked"),
    )
if len(texts) < max(k, 4):
    st.error(f"Only {len(texts)} texts: need at least {max(k, 4)} for {k} clusters and a 2-D projection.")
    st.stop()

vectors = embedded_vectors()
by_gold = bool(labels) and colour_by != "k-means"  # clusters to name: gold labels unless k-means is shown
query = st.text_input(
    "Search: a query embedded with each side's settings; its nearest texts light up on both plots",
    **state.kept("explore_query", "", url="q"),
).strip()
hits: list[dict] = []
if query:
    try:
        hits = search(embed_query(query), vectors, texts, top=10, labels=labels)
    except (LensError, ValueError) as error:
        st.warning(f"Search unavailable: {error}")

diff = diff_of(vectors[sides[0]], vectors[sides[1]], neighbours_k) if paired else None
chosen_movers = ((st.session_state.get("explore_movers") or {}).get("selection") or {}).get("rows", [])
mover_rows = movers(diff, texts, labels, top=100) if diff is not None else []
picked = [mover_rows[i]["index"] for i in chosen_movers if i < len(mover_rows)]

selected = {side: widgets.selected_points(f"umap_{side}") for side in sides}
st.caption(f"{len(texts)} texts shown.")
stem = widgets.file_stem("umap", *stem_parts)
layouts: dict[str, np.ndarray] = {}
clusters_of: dict[str, list[str]] = {}
names_by_side: dict[str, list] = {}
for column, side in zip(st.columns(len(sides)), sides, strict=True):
    with column:
        started = time.perf_counter()
        with st.spinner("UMAP..."):
            points = project_umap(vectors[side], umap_settings)
            if aligned and layouts:
                points = procrustes_align(layouts[sides[0]], points)
        seconds = time.perf_counter() - started
        layouts[side] = points
        clusters = kmeans(vectors[side], k)
        clusters_of[side] = labels if by_gold else [f"c{c}" for c in clusters]
        chosen = {i for other, ids in selected.items() if other != side for i in ids}
        highlight = sorted(chosen | set(picked) | {row["index"] for row in hits}) or None
        if colour_by == OVERLAP and diff is not None:
            title = f"{side}: UMAP, coloured by Jaccard@{neighbours_k} (red: moved)"
            figure = value_scatter(points, texts, diff.jaccard, title, f"Jaccard@{neighbours_k}", highlight, (0, 1))
        else:
            legend = "gold label" if colour_by == "gold label" else "k-means cluster"
            figure = projection_scatter(points, texts, clusters_of[side], f"{side}: UMAP", legend, highlight=highlight)
        names_by_side[side] = names_of(texts, clusters_of[side], 5, vectors[side], reader_key, reader)
        if named and colour_by != OVERLAP:
            names = names_by_side[side]
            add_cluster_names(figure, points, clusters_of[side], names)
        if aligned and side == sides[-1] and paired and (picked or chosen):
            add_arrows(figure, layouts[sides[0]], points, sorted(set(picked) | chosen))
        st.plotly_chart(figure, key=f"umap_{side}", on_select="rerun", selection_mode=("lasso", "box"))
        if labels:
            result = score(vectors[side], labels)
            st.metric(
                f"V-measure ({side})", f"{result['v_measure']:.4f} ± {result['v_measure_std']:.4f}",
                help=f"mean ± std over {len(result['v_measure_per_seed'])} k-means seeds, k = number of labels",
            )  # fmt: skip
        try:
            shape = silhouette(np.asarray(vectors[side]), [str(c) for c in clusters], n_boot=1000)
        except LensError as error:
            st.caption(f"No silhouette: {error}")
        else:
            st.metric(
                f"Silhouette ({side}, k-means k={k})",
                f"{shape['mean']:.3f} ± {(shape['ci_high'] - shape['ci_low']) / 2:.3f}",
                help="label-free: mean cosine silhouette of the k-means clusters (-1 to 1, higher = tighter, better "
                f"separated) ± half its 95% CI over texts; n = {shape['n']} texts"
                + (f" (a seeded sample of {shape['of']})" if shape["n"] < shape["of"] else ""),
            )  # fmt: skip
            st.caption(
                f"silhouette n = {shape['n']} texts" + (f" of {shape['of']}" if shape["n"] < shape["of"] else "")
            )
        st.caption(f"UMAP {seconds:.2f} s (cached projections load instantly)")
        table = {"x": points[:, 0], "y": points[:, 1], "text": texts, "label": labels or [""] * len(texts)}
        widgets.downloads_row(
            [
                ("figure", (figure, f"{stem}_{side}", f"dl_{side}")),
                ("table", ({**table, "kmeans": clusters}, f"{stem}_{side}_points", f"csv_{side}", "points CSV")),
                ("array", (np.asarray(vectors[side]), f"{stem}_{side}_vectors", f"npy_{side}", "vectors NPY")),
            ]
        )

if linked and paired:
    from analysis.neighbours.figures import linked_figure, linked_html

    values = diff.jaccard if colour_by == OVERLAP and diff is not None else None
    twin = linked_figure(layouts[sides[0]], layouts[sides[1]], texts, (sides[0], sides[1]), values, "Jaccard")
    # Texts in the page are JSON-escaped by plotly (``<`` as ``\u003c``): user text cannot close the script.
    st.iframe(linked_html(twin), height=540)

if hits:
    st.subheader(f"Nearest texts to “{query}”")
    st.dataframe(hits, width="stretch", hide_index=True)
    widgets.table_download(hits, f"{stem}_search", "csv_search", "search CSV")

if diff is not None:
    st.subheader(f"How the neighbourhoods moved: {sides[0]} → {sides[1]}")
    summary = diff.summary()
    jaccard, change = summary["jaccard"], summary["rank_change"]
    st.markdown(
        f"Mean Jaccard@{neighbours_k} **{jaccard['mean']:.3f}** (95% CI {jaccard['ci_low']:.3f} to "
        f"{jaccard['ci_high']:.3f}, bootstrap over texts); mean rank change **{change['mean']:.1f}** "
        f"({change['ci_low']:.1f} to {change['ci_high']:.1f}); {summary['unchanged']} of {len(texts)} texts kept "
        f"all {neighbours_k} neighbours."
    )
    values, counts = np.unique(np.round(diff.jaccard, 3), return_counts=True)
    st.bar_chart({"Jaccard": values.astype(str), "texts": counts}, x="Jaccard", y="texts", height=200)
    if mover_rows:
        st.caption("Biggest movers: lowest overlap first. Select rows to highlight them on both plots"
                   + (" (arrows: where they went)" if aligned else "") + ".")  # fmt: skip
        st.dataframe(mover_rows, width="stretch", hide_index=True, key="explore_movers", on_select="rerun",
                     selection_mode="multi-row")  # fmt: skip
    else:
        st.success("No text changed its neighbours: the two spaces agree at this k.")
    aligned_table = {"text": texts, "label": labels or [""] * len(texts)}
    for side in sides:
        aligned_table |= {f"x_{side}": layouts[side][:, 0], f"y_{side}": layouts[side][:, 1]}
    widgets.downloads_row(
        [
            ("table", (neighbour_rows(diff, texts, labels, (sides[0], sides[1])), f"{stem}_neighbours",
                       "csv_neighbours", "neighbours CSV")),
            ("table", (mover_rows, f"{stem}_movers", "csv_movers", "movers CSV")),
            ("table", (aligned_table, f"{stem}_aligned", "csv_aligned", "aligned coordinates CSV")),
        ]
    )  # fmt: skip

st.subheader("What the clusters are about")
kind = "gold labels" if by_gold else f"k-means, k={k}"
st.caption(f"Top words per cluster ({kind}) by class-based TF-IDF over its texts"
           + ("; the lens's reading of each centroid through the LM head." if reader else "."))  # fmt: skip
name_rows = []
for side in sides[:1] if by_gold else sides:  # gold clusters hold the same texts on both sides
    for name in names_by_side[side]:
        name_rows.append({"side": side, **name.row()})
st.dataframe(name_rows, width="stretch", hide_index=True)
widgets.table_download(name_rows, f"{stem}_cluster_names", "csv_names", "cluster names CSV")

unique = sorted({i for chosen in selected.values() for i in chosen})
if unique:
    st.subheader(f"{len(unique)} selected texts (highlighted in the other plot)")
    rows = {"text": [texts[i] for i in unique], "label": [labels[i] for i in unique] if labels else [""] * len(unique)}
    st.dataframe(rows, width="stretch")
else:
    st.caption("Draw a lasso or box on either plot to list the texts inside and highlight them in the other.")
