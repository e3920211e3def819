"""Embed & compare: cosine similarity matrices of base and adapter, side by side, and their difference."""

from __future__ import annotations

import numpy as np
import streamlit as st

from analysis.plots import similarity_heatmap
from workbench import state

EXAMPLES = """a man is driving a car
a woman is riding a bicycle
the stock market fell sharply today
shares dropped after the earnings report
What is the capital of France?
Which city is France's capital?"""

st.title("Embed & compare")
choice = state.model_choice()
encoder = state.load_encoder(choice)
if encoder is None:
    st.stop()
texts = [line.strip() for line in st.text_area("Texts, one per line", EXAMPLES, height=170).splitlines()]
texts = [t for t in texts if t]
settings = state.embedding_settings("embed", default_prompt=state.adapter_prompt_name(encoder))
if settings is None:
    st.stop()
if len(texts) < 2:
    st.warning("Enter at least two texts (one per line) to compare them.")
    st.stop()
prompt, pooling, layer = settings
sides = [("base", False), ("adapter", True)] if encoder.loaded.has_adapter else [("base", False)]
vectors = {}
try:
    with st.spinner("Embedding..."):
        for label, use_adapter in sides:
            vectors[label] = encoder.encode(
                texts, prompt=prompt, pooling=pooling, layer=layer, normalize=True, use_adapter=use_adapter
            )
except ValueError as error:
    st.error(str(error))
    st.stop()
similarity = {label: v @ v.T for label, v in vectors.items()}
labels = [t if len(t) <= 80 else t[:79] + "…" for t in texts]
columns = st.columns(len(similarity) + (1 if len(similarity) == 2 else 0))
for column, (label, matrix) in zip(columns, similarity.items(), strict=False):
    column.plotly_chart(similarity_heatmap(matrix, labels, f"{label}: cosine"), key=f"sim_{label}")
if len(similarity) == 2:
    difference = similarity["adapter"] - similarity["base"]
    columns[2].plotly_chart(similarity_heatmap(difference, labels, "adapter − base", diverging=True), key="sim_diff")
    off = ~np.eye(len(texts), dtype=bool)
    st.caption(
        f"Mean off-diagonal cosine: base {similarity['base'][off].mean():.3f}, adapter "
        f"{similarity['adapter'][off].mean():.3f}. Cosines are of L2-normalised vectors; prompt `{prompt}`, "
        f"pooling `{pooling}`, layer `{layer}`."
    )
else:
    st.info(f"No adapter loaded: base only. Make one with `{state.TRAIN_COMMAND}`.")
st.markdown("  \n".join(f"**{i + 1}.** {label}" for i, label in enumerate(labels)))
