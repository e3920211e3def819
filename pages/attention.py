"""Attention: where the query token looks, token x layer, base and adapter side by side."""

from __future__ import annotations

import streamlit as st

from analysis.attention import PAPER_EXAMPLE, attention_view
from analysis.categories import CATEGORIES
from analysis.plots import attention_heatmap, role_shares_figure
from core.data import LOCAL_TASKS, load_task
from core.encoding.capture import num_heads
from core.runtime.errors import LensError
from workbench import state, widgets

MEAN_HEADS = "mean over heads"

choice = state.model_choice()
widgets.header("Attention of the query token", choice)
encoder = state.load_encoder(choice)
if encoder is None:
    st.stop()

sources = ["type one", "pick from a dataset"]
source = st.radio(
    "Where the sentence comes from", sources, horizontal=True, **state.kept("att_source", sources[0], options=sources)
)
if source == "type one":
    text = st.text_input("Sentence", **state.kept("att_sentence", PAPER_EXAMPLE, url="sentence")).strip()
else:
    left, right = st.columns([1, 3])
    tasks = list(LOCAL_TASKS)
    task = left.selectbox("Task (test split)", tasks, **state.kept("att_task", "trec-fine", options=tasks))
    texts = load_task(task, "test").texts[:200]
    text = right.selectbox("Text", texts, **state.kept("att_text", texts[0], options=texts))
# An ensemble averages several wrapped texts; attention follows one, so the chooser offers what the report does.
settings = state.embedding_settings("attention", encoder, methods=("plain", "echo", "tp"))
if not text:
    st.warning("Enter a sentence.")
view_encoder = state.configured_encoder(encoder, settings) if settings is not None else None
if view_encoder is None or not text:
    st.stop()
heads = [MEAN_HEADS, *[f"head {h}" for h in range(num_heads(encoder.loaded.backbone))]]
left, right = st.columns(2)
head_choice = left.selectbox("Heads", heads, **state.kept("att_heads", MEAN_HEADS, options=heads))
head = None if head_choice == MEAN_HEADS else int(head_choice.split()[1])
renormalise = right.toggle(
    "Leave out the sink (position 0) and specials, renormalise", **state.kept("att_renormalise", True)
)
widgets.truncation_note(view_encoder, [text])

try:
    view = attention_view(view_encoder, text, head, renormalise)
except LensError as error:
    st.error(str(error))
    st.stop()

st.subheader(view.title)
DIFFERENCE = "adapter − base"
matrices = dict(view.matrices)
if view.difference is not None:
    matrices[DIFFERENCE] = view.difference
stem = widgets.file_stem("attention", choice.model, *state.setting_stem(settings), head_choice.replace(" ", ""))
for column, (label, matrix) in zip(st.columns(len(matrices)), matrices.items(), strict=True):
    with column:
        figure = attention_heatmap(
            matrix, view.tokens, view.categories, label, diverging=label == DIFFERENCE, outlined=view.pooled_layers
        )
        st.plotly_chart(figure, key=f"att_{label}")
        name = "difference" if label == DIFFERENCE else label
        rows = {"layer": [f"L{i}" for i in range(len(matrix))]}
        rows |= {f"{i}:{token.strip()}": matrix[:, i] for i, token in enumerate(view.tokens)}
        widgets.downloads_row(
            [
                ("figure", (figure, f"{stem}_{name}", f"dl_att_{name}")),
                ("table", (rows, f"{stem}_{name}_rows", f"csv_att_{name}", "rows CSV")),
            ]
        )
if view.difference is None:
    st.info(f"No adapter loaded: base only. Make one with `{state.TRAIN_COMMAND}`.")
pooled = ", ".join(f"L{row}" for row in view.pooled_layers) or "none (layer 0 pools the input embeddings)"
st.caption(
    f"Outlined: the layers whose outputs the chosen Layer pools ({pooled}). "
    f"{len(view.tokens)} tokens, {len(view.matrices)} forward pass(es) with hooks in {view.seconds:.2f} s. "
    "Token colours: " + ", ".join(CATEGORIES)
    + " (grey sink, olive special, blue prompt, red content, green function, purple punctuation, orange echo's first "
    "copy, cyan the tp placeholder)."
)  # fmt: skip
for column, (label, shares) in zip(st.columns(len(view.role_shares)), view.role_shares.items(), strict=True):
    with column:
        figure = role_shares_figure(shares, CATEGORIES, f"{label}: attention share by role")
        st.plotly_chart(figure, key=f"roles_{label}")
        widgets.figure_downloads(figure, f"{stem}_{label}_roles", f"dl_roles_{label}")
