"""Lens: what the embedding says in words at every layer (base, adapter, difference), and the corpus view.

The text's pooled vector at each layer goes through the model's final norm and LM head (``analysis.lens``). The
corpus view reads a lens report (``python -m analysis.lens``): key-token alignment per layer with bootstrap CIs,
the layer profile (V-measure per pooling and layer, the best marked) and linear CKA base vs adapter.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from analysis.lens.figures import alignment_figure, cka_figure, layer_profile_figure, top_tokens_figure
from analysis.lens.reading import profile_array, profile_table
from analysis.lens.text import text_lens
from core.runtime.errors import LensError
from workbench import state, widgets

DEFAULT_TEXT = "What is the capital city of Australia ?"
REPORTS = state.REPO / "results" / "lens"

choice = state.model_choice()
widgets.header("Lens: the vector in words", choice)
encoder = state.load_encoder(choice)
if encoder is None:
    st.stop()
if not encoder.loaded.is_causal:
    st.error("This model has no LM head (it is an encoder), so its vectors cannot be read as tokens; pick a decoder.")
    st.stop()

name = Path(choice.adapter).name if choice.adapter else Path(choice.model).name
folder = Path(st.text_input("Lens report folder", **state.kept("lens_folder", str(REPORTS / name))).strip())
report_file = folder / "report.json"
report = json.loads(report_file.read_text()) if report_file.is_file() else None
components = None
arrays_file = folder / "arrays.npz"
if report is not None and arrays_file.is_file():
    with np.load(arrays_file, allow_pickle=False) as arrays:
        found = {v: arrays[f"{v}/components"] for v in ("base", "adapter") if f"{v}/components" in arrays.files}
    # The report's components fit only the model it was made with: same depth and width.
    fits = all(c.shape == (encoder.loaded.num_layers + 1, encoder.dim) for c in found.values())
    if found and fits and report["settings"].get("model") == encoder.loaded.name:
        components = {v: dict(enumerate(c)) for v, c in found.items()}

text = st.text_input("Text", **state.kept("lens_text", DEFAULT_TEXT, url="text")).strip()
settings = state.embedding_settings("lens", encoder)
left, right = st.columns(2)
top_k = int(left.number_input("Top tokens per layer", 1, 50, **state.kept("lens_top_k", 10, bounds=(1, 50), url="k")))
remove = right.toggle(
    "Remove the corpus's first principal component",
    help="its direction per layer comes from the lens report below (made for this model)",
    disabled=components is None,
    **state.kept("lens_remove_pc", False, url="pc"),
)
if not text:
    st.warning("Enter a text.")
view_encoder = state.configured_encoder(encoder, settings) if settings is not None else None
if view_encoder is None or not text:
    st.stop()
widgets.truncation_note(view_encoder, [text])
started = time.perf_counter()
try:
    lens = text_lens(view_encoder, text, top_k=top_k, components=components if remove and components else None)
except LensError as error:
    st.error(str(error))
    st.stop()
seconds = time.perf_counter() - started

st.subheader("Top tokens at every layer" + (" (first principal component removed)" if lens.pc_removed else ""))
st.caption(
    f"Content tokens of the text: {', '.join(repr(t) for t in lens.content_tokens) or 'none'}. Hidden state 0 is "
    "the embeddings; the last one is the model's own next-token distribution at the pooled position. "
    f"{len(lens.layers)} hidden states from one shared forward, through the LM head in {seconds:.2f} s."
)
stem = widgets.file_stem(
    "lens", choice.model, *state.setting_stem(settings), f"k{top_k}", "pc" if lens.pc_removed else ""
)
for column, (variant, top) in zip(st.columns(len(lens.top)), lens.top.items(), strict=True):
    with column:
        figure = top_tokens_figure(lens.layers, top, f"{variant}")
        st.plotly_chart(figure, key=f"lens_top_{variant}")
        widgets.downloads_row(
            [
                ("figure", (figure, f"{stem}_{variant}", f"dl_lens_{variant}")),
                ("table", (lens.table(variant), f"{stem}_{variant}_tokens", f"csv_lens_{variant}", "tokens CSV")),
            ]
        )
if lens.changes:
    st.subheader("Adapter − base: probability that rose and fell most, per layer")
    rows = [
        {
            "layer": layer,
            "rose": ", ".join(f"{t!r} {d:+.3f}" for t, d in change["rises"][:5]),
            "fell": ", ".join(f"{t!r} {d:+.3f}" for t, d in change["falls"][:5]),
        }
        for layer, change in zip(lens.layers, lens.changes, strict=True)
    ]
    st.dataframe(pd.DataFrame(rows), hide_index=True, key="lens_changes")
    widgets.table_download(rows, f"{stem}_difference", "csv_lens_difference")
else:
    st.info(f"No adapter loaded: base only. Make one with `{state.TRAIN_COMMAND}`.")
ranks = {f"{v} best rank": r.min(1) if r.shape[1] else np.full(len(lens.layers), -1) for v, r in lens.ranks.items()}
st.caption("Best rank (0 = top token) of any of the text's own content tokens, per layer:")
st.dataframe(pd.DataFrame({"layer": lens.layers, **ranks}), hide_index=True, key="lens_ranks")

st.divider()
st.header("Corpus view")
if report is None:
    st.info(
        f"No lens report in `{folder}`. Make one with "
        f"`python -m analysis.lens --adapter {choice.adapter or 'ADAPTER'} --out {REPORTS.relative_to(state.REPO)}`."
    )
    st.stop()
lens_report = report.get("lens")
views = ["raw", "pc_removed"]
if lens_report:
    view = st.radio("Lens", views, horizontal=True, **state.kept("lens_view", "raw", options=views, url="view"))
    figure = alignment_figure(lens_report, view)
    st.plotly_chart(figure, key="lens_alignment")
    widgets.figure_downloads(figure, f"lens_alignment_{name}_{view}", "dl_lens_alignment")
    difference = lens_report["views"][view].get("difference", {}).get("hit_rate")
    if difference:
        st.caption(
            f"Adapter − base, final layer: {difference['mean'][-1]:+.3f} "
            f"[{difference['ci_low'][-1]:+.3f}, {difference['ci_high'][-1]:+.3f}] (95% bootstrap CI over "
            f"{difference['n']} texts of {lens_report['task']})."
        )
for task, profile in report.get("profiles", {}).items():
    figure = layer_profile_figure(profile)
    st.plotly_chart(figure, key=f"lens_profile_{task}")
    profile_stem = f"lens_profile_{name}_{task}"
    widgets.downloads_row(
        [
            ("figure", (figure, profile_stem, f"dl_lens_profile_{task}")),
            ("table", (profile_table(profile), profile_stem, f"csv_lens_profile_{task}", "profile CSV")),
            ("array", (profile_array(profile), f"{profile_stem}_v_measure", f"npy_lens_profile_{task}")),
        ]
    )
if "geometry" in report:
    figure = cka_figure(report["geometry"])
    st.plotly_chart(figure, key="lens_cka")
    widgets.figure_downloads(figure, f"lens_cka_{name}", "dl_lens_cka")
if arrays_file.is_file():
    st.download_button(
        "Per-text arrays (NPZ)", arrays_file.read_bytes(), f"lens_{name}_arrays.npz", key="dl_lens_arrays",
        on_click="ignore",
    )  # fmt: skip
