"""Attention: where the query token looks, token x layer, base and adapter side by side, and the pooled token's
content share at the pooled layers as numbers: for the sentence, and averaged over a dataset with a CI over texts.
A long sentence stays in the session, not in the URL (``workbench.state.MAX_URL_VALUE``)."""

from __future__ import annotations

import streamlit as st

from analysis.attention import (
    PAPER_EXAMPLE,
    attention_view,
    capture_corpus,
    pooled_share_summary,
    query_token_for,
    sentence_pooled_shares,
)
from analysis.categories import CATEGORIES
from analysis.plots import attention_heatmap, role_shares_figure
from core.data import LOCAL_TASKS, load_task
from core.encoding.capture import num_heads
from core.runtime.errors import LensError
from workbench import state, widgets

MEAN_HEADS = "mean over heads"
DATASET_TEXTS = 30  # texts averaged by default: two captured forwards of them take seconds on a CPU

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

st.subheader("Content share of the pooled token at the pooled layers")
share_format = {
    "share": st.column_config.NumberColumn(format="%.4f"),
    "ci_low": st.column_config.NumberColumn("95% CI low", format="%.4f"),
    "ci_high": st.column_config.NumberColumn("95% CI high", format="%.4f"),
}
where = "sink and specials left out, renormalised" if renormalise else "raw (sink and specials included)"
try:
    sentence_rows = sentence_pooled_shares(view.role_shares, view.pooled_layers)
except LensError as error:
    st.info(str(error))
else:
    st.caption(f"Attention mass on content tokens ({head_choice}, {where}), mean over the pooled layers ({pooled}).")
    st.dataframe(sentence_rows, hide_index=True, column_config=share_format, key="att_share_sentence")
    left, middle, right = st.columns([2, 1, 1])
    tasks = list(LOCAL_TASKS)
    share_task = left.selectbox(
        "Average over a dataset", tasks, **state.kept("att_share_task", "trec-coarse", options=tasks)
    )
    share_n = middle.number_input(
        "Texts", 2, 500, step=10, **state.kept("att_share_n", DATASET_TEXTS, bounds=(2, 500))
    )  # fmt: skip
    inputs = (choice, settings, share_task, int(share_n), renormalise)
    done = st.session_state.setdefault("att_share_done", {})
    if inputs not in done and right.button("Compute the average", key="att_share_go"):
        corpus_texts = load_task(share_task, "test").texts[: int(share_n)]
        token = query_token_for(view_encoder.pooling)
        try:
            with st.spinner(f"Attention of {len(corpus_texts)} texts x {len(view.matrices)} side(s)..."):
                corpora = {
                    side: capture_corpus(view_encoder, corpus_texts, use_adapter=side == "adapter", token=token)
                    for side in view.matrices
                }
            done.clear()  # one dataset's result at a time: the session stays small
            done[inputs] = pooled_share_summary(
                corpora["base"], corpora.get("adapter"), view.pooled_layers, renormalise=renormalise
            )
        except LensError as error:
            st.error(str(error))
    if inputs in done:
        rows = done[inputs]
        st.caption(
            f"The first {rows[0]['n']} texts of {share_task} (test split), same settings: mean over texts (heads "
            "averaged), 95% bootstrap CI over texts; *adapter − base* is paired over the same texts."
        )
        st.dataframe(rows, hide_index=True, column_config=share_format, key="att_share_dataset")
        widgets.table_download(rows, f"{stem}_content_share_{share_task}", "csv_att_share", "content share CSV")
