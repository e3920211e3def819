"""Attribution: which tokens make two texts similar (captum integrated gradients), base and adapter.

The work is a background job (``analysis.faithfulness.job``): IG of each setting, token pairs, deletion curves, each
part's progress and an ETA shown while it runs, one Stop button, results cached on disk by their inputs. The job
ends by itself when no tab watches it (this page refreshes its heartbeat while shown).
"""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from analysis.attribution.integrated_gradients import SimilarityComparison
from analysis.faithfulness.__main__ import ATTENTION_REPORT
from analysis.faithfulness.config import peak_layer_from_report
from analysis.faithfulness.job import (
    DEFAULT_MAX_STEPS,
    PART_LABELS,
    AttributionRequest,
    eta_left,
    job_folder,
    job_running,
    launch,
    load_part,
    pair_matrix_from_dict,
    read_status,
    request_stop,
    similarity_from_dict,
    touch_heartbeat,
)
from analysis.faithfulness.verdict import method_agreement, verdict_rows
from analysis.plots import attribution_bars_figure, pair_matrix_figure, text_curves_figure
from core.runtime.errors import LensError
from workbench import state, widgets

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
caps, stages, hold_column = st.columns(3)
max_steps = caps.select_slider(
    "IG step cap (per text and setting)", [16, 32, 64, 128, 256, 512], **state.kept("attr_steps", DEFAULT_MAX_STEPS)
)
pair_steps = stages.select_slider("Token-pair stages per text (more: closer to the straight path)", [1, 2, 4, 8], 2)
hold = hold_column.checkbox("Hold token pairs and curves when IG does not converge", False)
if settings is None:
    st.stop()
if not text_a or not text_b:
    st.warning("Enter two texts.")
    st.stop()
view = state.configured_encoder(encoder, settings, precision="fp32")
if view is None:
    st.stop()
widgets.truncation_note(view, [text_a, text_b])
has_adapter = view.loaded.has_adapter
request = AttributionRequest(
    model=choice.model,
    adapter=choice.adapter,
    setting=settings,
    text_a=text_a,
    text_b=text_b,
    max_steps=int(max_steps),
    pair_steps=int(pair_steps),
    peak_layer=peak_layer_from_report(ATTENTION_REPORT, view.loaded.name),
    device=choice.device,
    identity={"base": view.loaded.identity(False), "adapter": view.loaded.identity(True) if has_adapter else None},
    after_unconverged="stop" if hold else "label",
)
folder = job_folder(request)
parts = request.parts(has_adapter)


def start(after_unconverged: str) -> None:
    try:
        launch(replace(request, after_unconverged=after_unconverged))
    except (LensError, OSError) as error:
        st.session_state["attr_error"] = str(error)


def eta_text(status: dict) -> str:
    left_s = eta_left(status)
    if left_s is None:
        return "measuring the speed..."
    return f"about {left_s:.0f} s left" if left_s > 0 else f"{-left_s:.0f} s past the estimate, finishing"


@st.fragment(run_every=1.0)
def watch() -> None:
    """Progress of the running job, its ETA and the Stop button; the whole page reruns once it has ended."""
    if not job_running(folder):
        st.rerun()
    touch_heartbeat(folder)
    status = read_status(folder) or {}
    if status.get("state") in (None, "starting", "loading"):
        st.info("Starting the job: loading the model in a background process...")
    else:
        st.caption(f"Attribution running: {eta_text(status)}.")
        for part in parts:
            entry = status.get("parts", {}).get(part, {})
            done, total = entry.get("done", 0), entry.get("total", 0)
            if entry.get("state") in ("done", "cached"):
                text = f"{PART_LABELS[part]}: {'done' if entry['state'] == 'done' else 'from the cache'}"
                st.progress(1.0, text=text)
            elif entry.get("state") == "running":
                st.progress(min(done / max(total, 1), 1.0), text=f"{PART_LABELS[part]}: {done} of {total} "
                            f"{entry.get('unit', '')}")  # fmt: skip
            else:
                st.progress(0.0, text=f"{PART_LABELS[part]}: waiting")
    st.button("Stop", key="attr_stop", on_click=request_stop, args=(folder,))


status = read_status(folder) or {}
if job_running(folder):
    watch()
    st.stop()
if "attr_error" in st.session_state:
    st.error(st.session_state.pop("attr_error"))
state_now = status.get("state")
if state_now != "finished":
    label = "Attribute" if state_now not in ("stopped", "failed") else "Attribute (finished parts are kept)"
    st.button(label, type="primary", on_click=start, args=(request.after_unconverged,))
    if state_now == "stopped":
        st.warning(f"Attribution stopped ({status.get('message', 'stopped')}). Press *Attribute* to continue it.")
    elif state_now == "failed":
        st.error(status.get("message", "The attribution job failed; see job.log in " + str(folder)))
    elif state_now in ("starting", "loading"):
        st.error(f"The attribution job ended before it started its work; see `{folder / 'job.log'}`.")
    elif state_now is None:
        st.caption(
            f"A background job: IG of the cosine (at most {max_steps} steps per text and setting), token pairs, "
            "then deletion curves and their verdict. Under a minute on a quiet 2-core CPU at the default cap."
        )
ig = status.get("ig") or {}
if ig and not ig.get("converged", True):
    failed = ", ".join(
        f"{label} (A {d['a']:.1%} after {d['steps_a']} steps, B {d['b']:.1%} after {d['steps_b']} steps)"
        for label, d in sorted(ig["deltas"].items(), key=lambda item: item[0] != "base")  # base first
        if max(d["a"], d["b"]) > ig["tolerance"]
    )
    st.error(
        f"Integrated gradients did not converge for {failed}: the bars do not add up to the cosine's change "
        f"(allowed: {ig['tolerance']:.0%}). Raise the step cap for bars you can read as a decomposition."
    )
    if state_now == "held":
        st.warning("Token pairs and deletion curves were held back because IG did not converge.")
        st.button("Run token pairs and curves anyway (labelled unreliable)", on_click=start, args=("label",))
    elif ig.get("later_parts_unreliable"):
        st.warning("Token pairs and curves below ran beside this unconverged IG: read them as unreliable.")

ig_parts = {p.removeprefix("ig_"): load_part(folder, p) for p in parts if p.startswith("ig_")}
results = {label: similarity_from_dict(data) for label, data in ig_parts.items() if data}
if not results:
    st.stop()
comparison = SimilarityComparison(results, sum(status.get("parts", {}).get(p, {}).get("seconds", 0.0) for p in parts))
for column, (label, result) in zip(st.columns(len(results)), results.items(), strict=True):
    column.metric(f"cosine ({label})", f"{result.cosine:.4f}")
    column.caption(
        f"baseline cosine: A {result.a.reference:.4f}, B {result.b.reference:.4f} (the path's start). "
        f"convergence delta: A {result.a.relative_delta:.2%} ({result.a.steps} steps), "
        f"B {result.b.relative_delta:.2%} ({result.b.steps} steps)"
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
used = "; ".join(f"{label}: A {r.a.steps}, B {r.b.steps}" for label, r in results.items())
st.caption(
    f"IG steps used (cap {request.max_steps} per text): {used}. {comparison.seconds:.1f} s of work. "
    "Bars sum to the cosine's change from the baseline, up to the delta shown."
)
if not has_adapter:
    st.info(f"No adapter loaded: base only. Make one with `{state.TRAIN_COMMAND}`.")

pairs = load_part(folder, "pairs")
if pairs:
    st.subheader("Token pairs behind the cosine")
    matrices = {label: pair_matrix_from_dict(data) for label, data in pairs.items()}
    figure = pair_matrix_figure(pairs, "Contributions of token pairs (A x B)")
    for index, trace in enumerate(figure.data, start=1):  # one colour bar per panel, each at its panel's edge
        domain = figure.layout[f"xaxis{'' if index == 1 else index}"].domain
        trace.update(showscale=True, colorbar={"x": domain[1] + 0.005, "thickness": 10, "len": 0.8, "title": "Δcos"})
    st.plotly_chart(figure, key="pair_matrix")
    for label, matrix in matrices.items():
        st.write(f"**{label}**: {matrix.top_pairs(5)}")
    st.caption(
        "Exact decomposition of the cosine's change from the blanked pair; the error shown is the path integral's. "
        f"{request.pair_steps} staircase stages per text; {sum(m.seconds for m in matrices.values()):.1f} s."
    )

curves = load_part(folder, "curves")
if curves:
    st.subheader("Which explanation does the model follow? (deletion AOPC against random orders)")
    rows = verdict_rows(curves, tolerance=request.tolerance)
    table = pd.DataFrame(rows)
    table["random (mean ± SD, min-max)"] = [
        f"{r['random_mean']:.4f} ± {r['random_sd'] or 0:.4f} ({r['random_min']:.4f}-{r['random_max']:.4f}, "
        f"{r['draws']} draws)"
        for r in rows
    ]
    shown = table[["text", "setting", "rank", "method", "aopc_deletion", "vs_random", "z", "beats",
                   "random (mean ± SD, min-max)", "aopc_insertion_vs_random", "unreliable"]]  # fmt: skip
    st.dataframe(shown, hide_index=True, key="verdict_table")
    st.caption(
        "Per text (its partner: the other text) and setting, methods ranked by deletion AOPC minus the random "
        "floor's mean (vs_random); z: that difference in random SDs; beats: share of random orders it beats. "
        "With a handful of content tokens a few random draws bracket most orders: read z with care. "
        f"integrated_gradients here is the faithfulness ranker's (pooled-vector norm, at most "
        f"{request.curve_ig_steps} steps); unreliable: its completeness error exceeded {request.tolerance:.0%}."
    )
    tabs = st.tabs([f"text {text}, {setting}" for text in curves for setting in curves[text]])
    for tab, (text, setting) in zip(tabs, [(t, s) for t in curves for s in curves[t]], strict=True):
        record = curves[text][setting]
        agreement = method_agreement(record)
        heat = go.Figure(
            go.Heatmap(
                z=[[v if v is not None else float("nan") for v in row] for row in agreement["rho"]],
                x=agreement["methods"],
                y=agreement["methods"],
                zmin=-1,
                zmax=1,
                colorscale="RdBu",
                colorbar={"title": "Spearman ρ"},
                texttemplate="%{z:.2f}",
            )
        )
        heat.update_layout(
            title=f"Agreement of methods' token orders (text {text}, {setting}; {agreement['tokens']} tokens with a "
            "unique string)",
            height=380,
        )
        tab.plotly_chart(heat, key=f"agree_{text}_{setting}")
        tab.plotly_chart(
            text_curves_figure(record, f"{setting}: text {text}'s content tokens removed in each method's order"),
            key=f"curves_{text}_{setting}",
        )
