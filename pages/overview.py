"""Overview: the chosen model and adapter with its card, the local-track summary, and what each page answers."""

from __future__ import annotations

import streamlit as st

from analysis.clustering import folder_cells, summary_tables, top_rows
from core.encoding.pooling import POOLING_DESCRIPTIONS
from core.encoding.prompts import PROMPT_DESCRIPTIONS, PROMPTS
from core.models.adapters import read_adapter
from core.models.registry import DEFAULT_MODEL, PACKAGED
from core.runtime.errors import AdapterError
from workbench import state, widgets

PAGES = {
    "Embed & compare": "How similar do your texts look to the base model and to the adapter, and what changed?",
    "Attention": "Where does the pooled token look, per layer and head, and does fine-tuning move it to content words?",
    "Cluster explorer": "Do a dataset's labels form clusters in embedding space (UMAP), before and after fine-tuning?",
    "Clustering quality": "Which model x prompt x pooling scores best on the local clustering track (V-measure)?",
    "Attribution": "Which tokens make two texts similar (integrated gradients), base vs adapter?",
    "Adapters": "What adapters exist, how were they trained, and can I train a small one now?",
}

choice = state.model_choice()
widgets.header("Embedding Lens", choice)
st.write(
    "Turn small decoder-only language models into text embedders with prompts, pooling and "
    "contrastive LoRA, and see why they work (Roth et al. 2025, arXiv 2507.22729)."
)
left, right = st.columns(2)
with left:
    st.subheader("Loaded")
    st.markdown(f"**Model:** `{choice.model}`" + (" (default)" if choice.model == DEFAULT_MODEL else ""))
    if choice.adapter is None:
        st.markdown(f"**Adapter:** none. Make one with `{state.TRAIN_COMMAND}`.")
    else:
        st.markdown(f"**Adapter:** `{choice.adapter}`")
        try:
            adapter = read_adapter(choice.adapter)
        except AdapterError as error:
            st.warning(str(error))
            adapter = None
        if adapter is not None and adapter.card is not None:
            meta = adapter.metadata
            st.markdown(f"prompt `{meta.get('prompt')}`, pooling `{meta.get('pooling')}`, layer `{meta.get('layer')}`")
            for label, average in adapter.local_track_rows:
                st.markdown(f"- {label}: local-track average **{average:.4f}**")
            with st.expander("Adapter card"):
                st.markdown(adapter.readme or "(no card)")
with right:
    st.subheader("What each page answers")
    for page, question in PAGES.items():
        st.markdown(f"**{page}**: {question}")

st.subheader("Local clustering track")
results = state.REPO / "results" / "local-track"
cells = folder_cells(results, []) if (results / "cells").is_dir() else []
if cells:
    st.dataframe(top_rows(summary_tables(cells)[0], 5), hide_index=True, width="stretch")
    st.caption("Top five rows by average V-measure, plus the MiniLM baseline. All rows: Clustering quality.")
else:
    st.info("No results yet: `python -m analysis.clustering --preset default --out results/local-track`.")

with st.expander("Models, prompts and pooling modes"):
    st.table({"name": list(PACKAGED), "model": [p.description for p in PACKAGED.values()]})
    st.table({"name": list(PROMPTS), "what": list(PROMPT_DESCRIPTIONS.values()), "template": list(PROMPTS.values())})
    st.table({"mode": list(POOLING_DESCRIPTIONS), "what": list(POOLING_DESCRIPTIONS.values())})
