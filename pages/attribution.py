"""Attribution: which tokens make two texts similar (captum integrated gradients), base and adapter."""

from __future__ import annotations

import streamlit as st

from analysis.attribution import compare_similarity
from analysis.faithfulness import text_curves
from analysis.pair_attribution import compare_pair_matrices
from analysis.plots import attribution_bars_figure, pair_matrix_figure, text_curves_figure
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

st.subheader("Token pairs behind the cosine")
pair_steps = st.select_slider("Path midpoints per text (more: smaller completeness error, slower)", [2, 4, 8, 16], 4)
try:
    with st.spinner("Token-pair contributions..."):
        matrices = compare_pair_matrices(view, text_a, text_b, steps=pair_steps)
        curves = text_curves(view, text_a, text_b)
except LensError as error:
    st.error(str(error))
    st.stop()
st.plotly_chart(
    pair_matrix_figure({label: m.to_dict() for label, m in matrices.items()}, "Contributions of token pairs (A x B)"),
    key="pair_matrix",
)
for label, matrix in matrices.items():
    st.write(f"**{label}**: {matrix.top_pairs(5)}")
st.caption(
    "Exact decomposition of the cosine's change from the blanked pair; the error shown is the path integral's. "
    f"{sum(m.seconds for m in matrices.values()):.1f} s."
)
st.subheader("Deletion curves of text A")
for label, record in curves.items():
    st.plotly_chart(text_curves_figure(record, f"{label}: text A's content tokens removed in each method's order"))
