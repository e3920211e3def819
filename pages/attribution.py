"""Attribution: which tokens make two texts similar (captum integrated gradients), base and adapter.

The result is kept in the session for its inputs: controls that do not change them never rerun IG.
"""

from __future__ import annotations

import streamlit as st

from analysis.attribution import compare_similarity
from analysis.plots import attribution_bars_figure
from core.errors import LensError
from workbench import state, widgets

DELTA_WARNING = 0.05  # relative convergence error above which the bars do not add up to the cosine's change

choice = state.model_choice()
widgets.header("Attribution of a similarity", choice)
st.write(
    "Integrated gradients on the input embeddings: the cosine of text A's vector to text B's (held fixed) is "
    "split over A's tokens, and vice versa. Only the texts' own tokens move along the path; the prompt stays."
)
encoder = state.load_encoder(choice)
if encoder is None:
    st.stop()
left, right = st.columns(2)
text_a = left.text_input("Text A", **state.kept("attr_a", "a man is driving a car", url="a")).strip()
text_b = right.text_input("Text B", **state.kept("attr_b", "a person is riding a bicycle", url="b")).strip()
settings = state.embedding_settings("attr", default_prompt=state.adapter_prompt_name(encoder))
max_steps = st.select_slider(
    "Step cap (IG steps per attribution, added where the path needs them)", [64, 128, 256, 512],
    **state.kept("attr_steps", 256),
)  # fmt: skip
if settings is None:
    st.stop()
if not text_a or not text_b:
    st.warning("Enter two texts.")
    st.stop()
prompt, pooling, layer = settings
widgets.truncation_note(encoder, [text_a, text_b], prompt)
inputs = (choice, text_a, text_b, prompt, pooling, layer, max_steps)
done = st.session_state.setdefault("attr_results", {})
if st.button("Attribute", type="primary"):
    try:
        view = encoder.with_settings(prompt=prompt, pooling=pooling, layer=layer, precision="fp32")
        with st.spinner("Integrated gradients..."):
            done.clear()  # one result at a time
            done[inputs] = compare_similarity(view, text_a, text_b, max_steps=max_steps)
    except LensError as error:
        st.error(str(error))
        st.stop()
if inputs not in done:
    st.caption("Each attribution runs 16-256 forward and backward passes: a few seconds to a minute on a CPU.")
    st.stop()
comparison = done[inputs]
for column, (label, result) in zip(st.columns(len(comparison.results)), comparison.results.items(), strict=True):
    column.metric(f"cosine ({label})", f"{result.cosine:.4f}")
    column.caption(
        f"baseline cosine: A {result.a.reference:.4f}, B {result.b.reference:.4f} (the path's start). "
        f"convergence delta: A {result.a.relative_delta:.2%} ({result.a.steps} steps), "
        f"B {result.b.relative_delta:.2%} ({result.b.steps} steps)"
    )
    worst = max(result.a.relative_delta, result.b.relative_delta)
    if worst > DELTA_WARNING:
        column.warning(
            f"IG did not converge ({worst:.1%} > {DELTA_WARNING:.0%}): the bars do not add up to the cosine's change. "
            "Raise the step cap."
        )
stem = widgets.file_stem("attribution", choice.model, prompt[:20], pooling, f"L{layer}")
for side, name in (("a", "A"), ("b", "B")):
    bars = comparison.bars(side)
    figure = attribution_bars_figure(bars, f"Text {name}: token attributions to the cosine")
    st.plotly_chart(figure, key=f"ig_{side}")
    rows = [
        {"setting": label, "index": i, "token": token, "category": category, "attribution": score}
        for label, data in bars.items()
        for i, (token, category, score) in enumerate(
            zip(data["tokens"], data["categories"], data["scores"], strict=True)
        )
    ]
    widgets.downloads_row(
        [
            ("figure", (figure, f"{stem}_{name}", f"dl_ig_{side}")),
            ("table", (rows, f"{stem}_{name}_ig", f"csv_ig_{side}")),
        ]
    )
st.caption(f"{comparison.seconds:.1f} s. Bars sum to the cosine's change from the baseline, up to the delta shown.")
if len(comparison.results) == 1:
    st.info(f"No adapter loaded: base only. Make one with `{state.TRAIN_COMMAND}`.")
