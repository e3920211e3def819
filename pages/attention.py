"""Attention: where the query token looks, token x layer, base and adapter side by side."""

from __future__ import annotations

import streamlit as st

from analysis.attention import PAPER_EXAMPLE, attention_view
from analysis.categories import CATEGORIES
from analysis.plots import attention_heatmap, role_shares_figure
from core.capture import num_heads
from core.data import LOCAL_TASKS, load_task
from core.errors import LensError
from workbench import state

st.title("Attention of the query token")
choice = state.model_choice()
encoder = state.load_encoder(choice)
if encoder is None:
    st.stop()

source = st.radio("Where the sentence comes from", ["type one", "pick from a dataset"], horizontal=True)
if source == "type one":
    text = st.text_input("Sentence", PAPER_EXAMPLE).strip()
else:
    left, right = st.columns([1, 3])
    task = left.selectbox("Task (test split)", list(LOCAL_TASKS), index=list(LOCAL_TASKS).index("trec-fine"))
    texts = load_task(task, "test").texts[:200]
    text = right.selectbox("Text", texts)
settings = state.embedding_settings("attention", default_prompt=state.adapter_prompt_name(encoder))
if not text:
    st.warning("Enter a sentence.")
if settings is None or not text:
    st.stop()
prompt, pooling, layer = settings
heads = num_heads(encoder.loaded.backbone)
left, right = st.columns(2)
head_choice = left.selectbox("Heads", ["mean over heads", *[f"head {h}" for h in range(heads)]])
head = None if head_choice == "mean over heads" else int(head_choice.split()[1])
renormalise = right.toggle("Leave out the sink (position 0) and specials, renormalise", value=True)

try:
    view = attention_view(encoder.with_settings(prompt=prompt, pooling=pooling, layer=layer), text, head, renormalise)
except LensError as error:
    st.error(str(error))
    st.stop()

st.subheader(view.title)
DIFFERENCE = "adapter − base"
matrices = dict(view.matrices)
if view.difference is not None:
    matrices[DIFFERENCE] = view.difference
columns = st.columns(len(matrices))
for column, (label, matrix) in zip(columns, matrices.items(), strict=True):
    figure = attention_heatmap(matrix, view.tokens, view.categories, label, diverging=label == DIFFERENCE)
    for row in view.pooled_layers:  # outline the layers whose outputs the chosen Layer pools
        figure.add_hrect(y0=row - 0.5, y1=row + 0.5, line_color="black", line_width=1, fillcolor="rgba(0,0,0,0)")
    column.plotly_chart(figure, key=f"att_{label}")
if view.difference is None:
    st.info(f"No adapter loaded: base only. Make one with `{state.TRAIN_COMMAND}`.")
pooled = ", ".join(f"L{row}" for row in view.pooled_layers) or "none (layer 0 pools the input embeddings)"
st.caption(
    f"Outlined: the layers whose outputs the chosen Layer pools ({pooled}). "
    f"{len(view.tokens)} tokens, {len(view.matrices)} forward pass(es) with hooks in {view.seconds:.2f} s. "
    "Token colours: " + ", ".join(CATEGORIES)
    + " (grey sink, olive special, blue prompt, red content, green function, purple punctuation)."
)  # fmt: skip
columns = st.columns(len(view.role_shares))
for column, (label, shares) in zip(columns, view.role_shares.items(), strict=True):
    column.plotly_chart(
        role_shares_figure(shares, CATEGORIES, f"{label}: attention share by role"), key=f"roles_{label}"
    )
