"""Embed & compare: cosine similarity matrices of base and adapter on one colour scale, their difference, and
(with labels) the mean cosine within and between labels."""

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

choice = state.model_choice()
widgets.header("Embed & compare", choice)
encoder = state.load_encoder(choice)
if encoder is None:
    st.stop()
left, right = st.columns([3, 1])
raw_texts = left.text_area("Texts, one per line", height=170, **state.kept("embed_texts", EXAMPLES))
texts = [t.strip() for t in raw_texts.splitlines()]
texts = [t for t in texts if t]
raw_labels = right.text_area(
    "Labels, one per line (optional)", height=170, **state.kept("embed_labels", EXAMPLE_LABELS)
).splitlines()
labels = [label.strip() for label in raw_labels if label.strip()] or None
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
try:
    with st.spinner("Embedding..."):  # base and adapter from one shared-trunk pass
        vectors = embed_sides(view, texts)
except ValueError as error:
    st.error(str(error))
    st.stop()
similarity = {side: cosine_matrix(v) for side, v in vectors.items()}
short = [t if len(t) <= 80 else t[:79] + "…" for t in texts]
shared = (min(float(m.min()) for m in similarity.values()), 1.0)  # one colour scale: the same cosine, the same colour
figures = {side: similarity_heatmap(m, short, f"{side}: cosine", zrange=shared) for side, m in similarity.items()}
if len(similarity) == 2:
    difference = similarity["adapter"] - similarity["base"]
    figures["difference"] = similarity_heatmap(difference, short, "adapter − base", diverging=True, digits=3)
stem = widgets.file_stem("embed", choice.model, *state.setting_stem(settings))
for column, (name, figure) in zip(st.columns(len(figures)), figures.items(), strict=True):
    with column:
        st.plotly_chart(figure, key=f"sim_{name}")
        matrix = difference if name == "difference" else similarity[name]
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
    f"`{settings.layer}`."
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
