"""Embed & compare: cosine similarity matrices of base and adapter on one colour scale, their difference, and
(with labels) the mean cosine within and between labels. Texts are typed or uploaded; embedding shows its batches
with the time left and can be stopped; with labels the matrices carry label bands and can be sorted by label."""

from __future__ import annotations

import math

import numpy as np
import streamlit as st

from analysis.plots import similarity_heatmap
from analysis.sides import embed_sides
from analysis.similarity import cosine_matrix, label_cosines
from core.encoding.methods import METHOD_KINDS
from workbench import state, widgets

EXAMPLES = """a man is driving a car
a woman is riding a bicycle
the stock market fell sharply today
shares dropped after the earnings report
What is the capital of France?
Which city is France's capital?"""
EXAMPLE_LABELS = "transport\ntransport\nfinance\nfinance\ngeography\ngeography"
MAX_TEXTS = 200  # an n x n matrix per side: beyond this the cells are unreadable and the page slow
BATCH_TEXTS = 8  # texts per progress report: a Stop lands within one batch (seconds, even under echo on a CPU)
STOPPED = "embed_stopped"

choice = state.model_choice()
widgets.header("Embed & compare", choice)
encoder = state.load_encoder(choice)
if encoder is None:
    st.stop()
source = st.radio("Texts", ["type them", "upload a file"], horizontal=True, **state.kept("embed_source", "type them"))
labels: list[str] | None
if source == "upload a file":
    dataset = widgets.upload_texts("embed_upload", MAX_TEXTS)
    if dataset is None:
        st.info("Upload a table with a text column (and optionally a label column), or a .txt with one text per line.")
        st.stop()
    texts, labels, where = list(dataset.texts), dataset.labels, dataset.name
else:
    left, right = st.columns([3, 1])
    raw_texts = left.text_area("Texts, one per line", height=170, **state.kept("embed_texts", EXAMPLES))
    texts = [t.strip() for t in raw_texts.splitlines()]
    texts = [t for t in texts if t]
    if len(texts) > MAX_TEXTS:
        st.caption(f"{len(texts)} texts typed: the first {MAX_TEXTS} are compared (upload a file for a sample).")
        texts = texts[:MAX_TEXTS]
    raw_labels = right.text_area(
        "Labels, one per line (optional)", height=170, **state.kept("embed_labels", EXAMPLE_LABELS)
    ).splitlines()
    labels = [label.strip() for label in raw_labels if label.strip()] or None
    where = "typed"
settings = state.embedding_settings("embed", encoder, methods=METHOD_KINDS)
view = state.configured_encoder(encoder, settings) if settings is not None else None
if view is None:
    st.stop()
if len(texts) < 2:
    st.warning("Enter at least two texts (one per line) to compare them.")
    st.stop()
if labels is not None and len(labels) != len(texts):
    st.warning(f"{len(labels)} labels for {len(texts)} texts: give one label per text (or none). Labels ignored.")
    labels = None
widgets.truncation_note(view, texts)
sides = "base + adapter" if encoder.loaded.has_adapter else "base"
inputs = (choice, settings, tuple(texts))
kept_vectors = st.session_state.setdefault("embed_vectors", {})
if inputs in kept_vectors:  # a rerun for the layout or the order: nothing to embed again
    vectors = kept_vectors[inputs]
else:
    if widgets.was_stopped(STOPPED, inputs) and not widgets.start_button("Embed again", STOPPED, inputs):
        st.warning(
            "Embedding stopped. Texts embedded before the stop are in the disk cache: *Embed again* goes on from "
            "there. Fewer texts or the plain method are quicker."
        )
        st.stop()
    widgets.clear_stopped(STOPPED)
    stop = widgets.stop_button(STOPPED, inputs)
    bar = st.progress(0.0)
    batches = math.ceil(len(texts) / BATCH_TEXTS)
    report = widgets.progress_with_eta(bar, f"Embedding {len(texts)} texts ({sides})", unit="batches")
    try:  # base and adapter from one shared-trunk pass, a batch at a time
        vectors = embed_sides(
            view, texts, lambda done, total: report(math.ceil(done / BATCH_TEXTS), batches), chunk=BATCH_TEXTS
        )
    except ValueError as error:
        st.error(str(error))
        st.stop()
    bar.empty()
    stop.empty()
    kept_vectors.clear()  # one set of texts at a time: the session stays small
    kept_vectors[inputs] = vectors
similarity = {side: cosine_matrix(v) for side, v in vectors.items()}
short = [t if len(t) <= 80 else t[:79] + "…" for t in texts]
layout, order_by = st.columns(2)
large = layout.toggle("Large heatmaps (one per row)", **state.kept("embed_large", len(texts) > 12))
by_label = labels is not None and order_by.toggle("Sort by label", **state.kept("embed_sort", True))
order = np.argsort(np.asarray(labels), kind="stable") if by_label else np.arange(len(texts))
shown = {side: m[np.ix_(order, order)] for side, m in similarity.items()}
drawn = {
    "labels": [short[i] for i in order],
    "numbers": [int(i) + 1 for i in order],
    "groups": [labels[i] for i in order] if labels is not None else None,
}
shared = (min(float(m.min()) for m in similarity.values()), 1.0)  # one colour scale: the same cosine, the same colour
figures = {side: similarity_heatmap(m, title=f"{side}: cosine", zrange=shared, **drawn) for side, m in shown.items()}
if len(similarity) == 2:
    difference = similarity["adapter"] - similarity["base"]
    figures["difference"] = similarity_heatmap(
        difference[np.ix_(order, order)], title="adapter − base", diverging=True, digits=3, **drawn
    )
stem = widgets.file_stem("embed", choice.model, *state.setting_stem(settings))
slots = [st.container() for _ in figures] if large else st.columns(len(figures))
for column, (name, figure) in zip(slots, figures.items(), strict=True):
    with column:
        st.plotly_chart(figure, key=f"sim_{name}")
        matrix = difference if name == "difference" else similarity[name]  # downloads keep the texts' own order
        widgets.downloads_row(
            [
                ("figure", (figure, f"{stem}_{name}", f"dl_{name}")),
                ("array", (matrix, f"{stem}_{name}_cosine", f"npy_{name}", "matrix NPY")),
            ]
        )
        if name in vectors:
            widgets.array_download(vectors[name], f"{stem}_{name}_vectors", f"vec_{name}", "vectors NPY")
if labels is not None:
    scores = {side: label_cosines(m, labels) for side, m in similarity.items()}
    st.subheader("Do texts with the same label sit closer?")
    for column, (side, score) in zip(st.columns(len(scores)), scores.items(), strict=True):
        column.metric(
            f"within − between label ({side})",
            "n/a" if math.isnan(score["gap"]) else f"{score['gap']:+.4f}",
            help="mean cosine of same-label pairs minus that of different-label pairs (a text with itself excluded)",
        )
        column.caption(f"within {score['within']:.4f}, between {score['between']:.4f}")
used = (
    f"Method `{settings.method}`, prompt `{settings.prompt or 'its own'}`, pooling `{settings.pooling}`, layer "
    f"`{settings.layer}`. Texts: {where}, {len(texts)}"
    + (", sorted by label (axis numbers are the texts' own)." if by_label else ".")
)
if len(similarity) == 2:
    off = ~np.eye(len(texts), dtype=bool)
    st.caption(
        f"Mean off-diagonal cosine: base {similarity['base'][off].mean():.3f}, adapter "
        f"{similarity['adapter'][off].mean():.3f}. Base and adapter share one colour scale "
        f"({shared[0]:.2f} to 1); the difference is centred at 0. {used}"
    )
else:
    st.caption(used)
    st.info(f"No adapter loaded: base only. Make one with `{state.TRAIN_COMMAND}`.")
st.markdown("  \n".join(f"**{i + 1}.** {text}" for i, text in enumerate(short)))
