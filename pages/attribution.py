"""Attribution: which tokens make two texts similar (captum integrated gradients), base and adapter.

IG runs on a button, with progress, an ETA and a Stop button; the result is kept in the session for its inputs,
so controls that do not change them never rerun it.
"""

from __future__ import annotations

import streamlit as st

from analysis.attribution.integrated_gradients import compare_similarity
from analysis.attribution.token_pairs import compare_pair_matrices
from analysis.faithfulness.__main__ import ATTENTION_REPORT
from analysis.faithfulness.config import peak_layer_from_report
from analysis.faithfulness.report import text_curves
from analysis.plots import attribution_bars_figure, pair_matrix_figure, text_curves_figure
from core.runtime.errors import LensError
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
settings = state.embedding_settings("attr", encoder)
max_steps = st.select_slider(
    "Step cap (IG steps per attribution, added where the path needs them)", [64, 128, 256, 512],
    **state.kept("attr_steps", 256),
)  # fmt: skip
if settings is None:
    st.stop()
if not text_a or not text_b:
    st.warning("Enter two texts.")
    st.stop()
view = state.configured_encoder(encoder, settings, precision="fp32")
if view is None:
    st.stop()
widgets.truncation_note(view, [text_a, text_b])
inputs = (choice, text_a, text_b, settings, max_steps)
done = st.session_state.setdefault("attr_results", {})
STOPPED = "attr_stopped"
if st.button("Attribute", type="primary"):
    widgets.clear_stopped(STOPPED)
    stop = widgets.stop_button(STOPPED, inputs)
    bar = st.progress(0.0)
    try:
        done.clear()  # one result at a time
        progress = widgets.progress_with_eta(bar, "Integrated gradients", unit="steps (at most)")
        done[inputs] = compare_similarity(view, text_a, text_b, max_steps=max_steps, progress=progress)
    except LensError as error:
        st.error(str(error))
        st.stop()
    bar.empty()
    stop.empty()
if inputs not in done:
    if widgets.was_stopped(STOPPED, inputs):
        st.warning("Attribution stopped. Press *Attribute* to start it again.")
    else:
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
stem = widgets.file_stem("attribution", choice.model, *state.setting_stem(settings))
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

st.subheader("Token pairs behind the cosine")
pair_steps = st.select_slider("Staircase stages per text (more: closer to the straight path, slower)", [1, 2, 4, 8], 2)
pair_done = st.session_state.setdefault("attr_pairs", {})  # kept for its inputs, like the IG result
PAIRS_STOPPED = "attr_pairs_stopped"
if (inputs, pair_steps) not in pair_done:
    # Runs by itself after IG; Stop ends it between its two parts (then it waits for its own button).
    if widgets.was_stopped(PAIRS_STOPPED, (inputs, pair_steps)) and not st.button("Token pairs and deletion curves"):
        st.warning("Token pairs and deletion curves stopped. Press *Token pairs and deletion curves* to run them.")
        st.stop()
    widgets.clear_stopped(PAIRS_STOPPED)
    stop = widgets.stop_button(PAIRS_STOPPED, (inputs, pair_steps))
    bar = st.progress(0.0)
    report = widgets.progress_with_eta(bar, "Token pairs, then deletion curves", unit="parts")
    try:
        pair_done.clear()
        report(0, 2)
        matrices = compare_pair_matrices(view, text_a, text_b, steps=pair_steps)
        report(1, 2)
        # attention_peak reads the layer where the committed attention report found the shift (the last otherwise)
        peak = peak_layer_from_report(ATTENTION_REPORT, view.loaded.name)
        pair_done[(inputs, pair_steps)] = (matrices, text_curves(view, text_a, text_b, peak_layer=peak))
    except LensError as error:
        st.error(str(error))
        st.stop()
    bar.empty()
    stop.empty()
matrices, curves = pair_done[(inputs, pair_steps)]
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
