"""Attribution: which tokens make two texts similar (captum integrated gradients), base and adapter."""

from __future__ import annotations

import time

import streamlit as st

from analysis.attribution import Attributor
from analysis.plots import attribution_bars_figure
from core.encoder import Encoder
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
    view = Encoder(encoder.loaded, prompt=prompt, pooling=pooling, layer=layer, cache=False, precision="fp32")
    attributor = Attributor(view, max_steps=max_steps)
    sides = [("base", False), ("adapter", True)] if encoder.loaded.has_adapter else [("base", False)]
    results = {}
    started = time.perf_counter()
    with st.spinner("Integrated gradients..."):
        for label, use_adapter in sides:
            results[label] = attributor.similarity(text_a, text_b, use_adapter=use_adapter)
    seconds = time.perf_counter() - started
except ValueError as error:
    st.error(str(error))
    st.stop()
columns = st.columns(len(results))
for column, (label, result) in zip(columns, results.items(), strict=True):
    column.metric(f"cosine ({label})", f"{result.cosine:.4f}")
    column.caption(
        f"convergence delta: A {result.a.relative_delta:.2%} ({result.a.steps} steps), "
        f"B {result.b.relative_delta:.2%} ({result.b.steps} steps)"
    )
for side, name in (("a", "A"), ("b", "B")):
    data = {label: getattr(result, side).to_dict() for label, result in results.items()}
    st.plotly_chart(attribution_bars_figure(data, f"Text {name}: token attributions to the cosine"), key=f"ig_{side}")
st.caption(f"{seconds:.1f} s. Bars sum to the cosine's change from the baseline, up to the delta shown.")
if len(results) == 1:
    st.info(f"No adapter loaded: base only. Make one with `{state.TRAIN_COMMAND}`.")
