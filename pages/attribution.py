"""Attribution: which tokens make two texts similar (captum integrated gradients), base and adapter."""

from __future__ import annotations

import streamlit as st

from analysis.attribution import compare_similarity
from analysis.plots import attribution_bars_figure
from core.errors import LensError
from workbench import state

st.title("Attribution of a similarity")
st.write(
    "Integrated gradients on the input embeddings: the cosine of text A's vector to text B's (held fixed) is "
    "split over A's tokens, and vice versa. Only the texts' own tokens move along the path; the prompt stays."
)
choice = state.model_choice()
encoder = state.load_encoder(choice)
if encoder is None:
    st.stop()
left, right = st.columns(2)
text_a = left.text_input("Text A", "a man is driving a car").strip()
text_b = right.text_input("Text B", "a person is riding a bicycle").strip()
settings = state.embedding_settings("attr", default_prompt=state.adapter_prompt_name(encoder))
max_steps = st.select_slider(
    "Step cap (IG steps per attribution, added where the path needs them)", [64, 128, 256, 512], 256
)
if settings is None:
    st.stop()
if not text_a or not text_b:
    st.warning("Enter two texts.")
    st.stop()
prompt, pooling, layer = settings
if not st.button("Attribute", type="primary"):
    st.caption("Each attribution runs 16-256 forward and backward passes: a few seconds to a minute on a CPU.")
    st.stop()
try:
    view = encoder.with_settings(prompt=prompt, pooling=pooling, layer=layer, precision="fp32")
    with st.spinner("Integrated gradients..."):
        comparison = compare_similarity(view, text_a, text_b, max_steps=max_steps)
except LensError as error:
    st.error(str(error))
    st.stop()
columns = st.columns(len(comparison.results))
for column, (label, result) in zip(columns, comparison.results.items(), strict=True):
    column.metric(f"cosine ({label})", f"{result.cosine:.4f}")
    column.caption(
        f"convergence delta: A {result.a.relative_delta:.2%} ({result.a.steps} steps), "
        f"B {result.b.relative_delta:.2%} ({result.b.steps} steps)"
    )
for side, name in (("a", "A"), ("b", "B")):
    figure = attribution_bars_figure(comparison.bars(side), f"Text {name}: token attributions to the cosine")
    st.plotly_chart(figure, key=f"ig_{side}")
st.caption(f"{comparison.seconds:.1f} s. Bars sum to the cosine's change from the baseline, up to the delta shown.")
if len(comparison.results) == 1:
    st.info(f"No adapter loaded: base only. Make one with `{state.TRAIN_COMMAND}`.")
