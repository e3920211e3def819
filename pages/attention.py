"""Attention: where the pooled token looks, token x layer, base and adapter side by side."""

from __future__ import annotations

import time

import streamlit as st

from analysis.attention import CATEGORIES, PAPER_EXAMPLE, capture_corpus, layer_token_matrix, role_shares_per_layer
from analysis.plots import attention_heatmap, role_shares_figure
from core.capture import EagerAttentionError, num_heads
from core.data import LOCAL_TASKS, load_task
from core.encoder import Encoder
from workbench import state

st.title("Attention of the pooled token")
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
prompt, pooling, _ = settings
heads = num_heads(encoder.loaded.backbone)
left, right = st.columns(2)
head_choice = left.selectbox("Heads", ["mean over heads", *[f"head {h}" for h in range(heads)]])
head = None if head_choice == "mean over heads" else int(head_choice.split()[1])
renormalise = right.toggle("Leave out the sink (position 0) and specials, renormalise", value=True)

try:
    view = Encoder(encoder.loaded, prompt=prompt, pooling=pooling, cache=False, precision=encoder.precision)
    started = time.perf_counter()
    sides = [("base", False), ("adapter", True)] if encoder.loaded.has_adapter else [("base", False)]
    captured = {label: capture_corpus(view, [text], use_adapter=flag).items[0] for label, flag in sides}
    seconds = time.perf_counter() - started
except (ValueError, EagerAttentionError) as error:
    st.error(str(error))
    st.stop()

first = next(iter(captured.values()))
categories = [CATEGORIES[c] for c in first.categories]
matrices = {label: layer_token_matrix(item, head, renormalise) for label, item in captured.items()}
columns = st.columns(3 if len(matrices) == 2 else 1)
for column, (label, matrix) in zip(columns, matrices.items(), strict=False):
    column.plotly_chart(attention_heatmap(matrix, first.tokens, categories, label), key=f"att_{label}")
if len(matrices) == 2:
    difference = matrices["adapter"] - matrices["base"]
    columns[2].plotly_chart(
        attention_heatmap(difference, first.tokens, categories, "adapter − base", diverging=True), key="att_diff"
    )
else:
    st.info(f"No adapter loaded: base only. Make one with `{state.TRAIN_COMMAND}`.")
st.caption(
    f"{len(first.tokens)} tokens, {len(matrices)} forward pass(es) with hooks in {seconds:.2f} s. Token colours: "
    + ", ".join(f"{c}" for c in CATEGORIES)
    + " (grey sink, olive special, blue prompt, red content, green function, purple punctuation)."
)
columns = st.columns(len(captured))
for column, (label, item) in zip(columns, captured.items(), strict=True):
    shares = role_shares_per_layer(item, head, renormalise)
    column.plotly_chart(
        role_shares_figure(shares, CATEGORIES, f"{label}: attention share by role"), key=f"roles_{label}"
    )
