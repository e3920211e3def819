"""Clustering quality: the results grid as a filtered, sorted table (MiniLM marked as the baseline, each adapter
row against its base model, training-free methods side by side where the grid has them) with each number's
uncertainty (CI over texts where the cells store replicates, else the k-means seed spread, and n), and charts that
follow the table's rows and order; below, the layer profile of a lens report (V-measure at every layer, base vs
adapter)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from analysis.clustering import (
    BASELINE_MODEL,
    filter_rows,
    folder_cells,
    heatmap_frames,
    quality_view,
    summary_tables,
    track_gains,
)
from analysis.clustering.summary import TRACK_AVERAGES, index_columns, task_columns
from analysis.clustering.summary_uncertainty import BY_SEEDS, BY_TEXTS, uncertainty_view
from analysis.clustering.uncertainty import N_BOOT
from analysis.lens.figures import layer_profile_figure
from analysis.lens.reading import find_reports, profile_array, profile_table, read_profiles, restrict_profile
from analysis.plots import clustering_heatmap, quality_bars, track_gain_scatter
from workbench import widgets
from workbench.state import REPO, carry_model_in_url, kept

carry_model_in_url()
widgets.header("Clustering quality")
folder = Path(st.text_input("Results folder", **kept("q_folder", str(REPO / "results" / "local-track"))).strip())
cells = folder_cells(folder, []) if (folder / "cells").is_dir() else []
if not cells:
    st.error(
        f"No clustering results under `{folder}`. Make them with "
        "`python -m analysis.clustering --preset default --out results/local-track`."
    )
    st.stop()
scores, stds = summary_tables(cells)
tasks = task_columns(scores)
index = scores.index


def choices(level: str) -> list[str]:
    return sorted(set(index.get_level_values(level)))


has_methods = "method" in index.names  # the summary has a method column once a grid ran a non-plain method
columns = st.columns(5 if has_methods else 4)
variants = columns[0].multiselect(
    "Model / adapter", choices("variant"), **kept("q_variants", [], options=choices("variant"))
)
methods: list[str] = []
if has_methods:
    methods = columns[1].multiselect(
        "Method", choices("method"), help="training-free methods (core.encoding.methods); plain is the prompt alone",
        **kept("q_methods", [], options=choices("method"), url="methods"),
    )  # fmt: skip
prompts = columns[-3].multiselect("Prompt", choices("prompt"), **kept("q_prompts", [], options=choices("prompt")))
poolings = columns[-2].multiselect("Pooling", choices("pooling"), **kept("q_poolings", [], options=choices("pooling")))
shown_tasks = columns[-1].multiselect("Tasks", tasks, **kept("q_tasks", tasks, options=tasks)) or tasks
sort_options = ["average", "vs base", *shown_tasks]
a, b = st.columns([3, 1])
sort_by = a.selectbox(
    "Sort rows (table and charts) by", sort_options, **kept("q_sort", "average", options=sort_options)
)
ascending = b.toggle("Ascending", **kept("q_ascending", False))
view = quality_view(scores, filter_rows(scores, variants, prompts, poolings, shown_tasks, methods), sort_by, ascending)
view = uncertainty_view(view, cells, shown_tasks)
baseline_rows = view[view["role"] == "baseline"]
baseline = float(baseline_rows["average"].iloc[0]) if len(baseline_rows) else None
by_texts = int((view["spread"] == BY_TEXTS).sum())
st.caption(
    f"{len(view)} rows of {len(scores)}; V-measure, mean over k-means seeds; the average is over the tasks shown. "
    f"Role *baseline*: {BASELINE_MODEL} (always shown). *vs base*: an adapter row's average minus its base model's "
    "with the same " + ("method, " if has_methods else "") + "prompt, pooling and layer."
    + (" *local_average* / *transfer_average*: over each whole track, whatever tasks are shown." if "transfer_average"
       in view.columns else "")
)  # fmt: skip
st.caption(
    f"**±**: half-width of the 95% CI over texts (bootstrap of the texts, {N_BOOT} resamples; *spread* {BY_TEXTS!r}) "
    f"for {by_texts} rows; rows from cells made before replicates were stored have only the k-means seed spread "
    f"(±2 std, *spread* {BY_SEEDS!r}): rerun their grid to get CIs over texts. *n texts*: texts scored over the "
    "tasks shown. *vs base ±*: paired over the same texts (empty where the rows lack replicates). *within noise of "
    "best*: the row's gap to the best average is not distinguishable from 0. *gap*: mean within-minus-between label "
    "cosine, in the model's own cosine scale; *gap AUC*: its rank form (0.5 = labels invisible, 1 = every text "
    "nearer its own label), which compares across models."
)
index = index_columns(view)
lead = [sort_by] if sort_by not in index else []
numbers_first = ["average", "average ±", "n texts", "spread", "vs base", "vs base ±", "within noise of best"]
order = list(dict.fromkeys(["role", *index, *lead, *numbers_first, "gap", "gap ±", "gap AUC", "gap AUC ±",
                            *shown_tasks, *[c for c in TRACK_AVERAGES if c in view.columns]]))  # fmt: skip
numbers = {t: st.column_config.NumberColumn(format="%.4f") for t in [*shown_tasks, "average", *TRACK_AVERAGES]}
numbers["vs base"] = st.column_config.NumberColumn(format="%+.4f", help="adapter minus base model, same settings")
numbers["gap"] = st.column_config.NumberColumn(format="%.4f", help="within minus between label cosine (raw)")
numbers["gap AUC"] = st.column_config.NumberColumn(format="%.4f", help="rank form of the gap: compares across models")
st.dataframe(view, hide_index=True, width="stretch", column_config=numbers, column_order=order)
stem = widgets.file_stem("clustering", folder.name, f"by-{sort_by}", "asc" if ascending else "desc")
widgets.table_download(view, stem, "q_csv", "table CSV")
if len(view) > 1:
    n_bars = st.slider(
        "Bars: the first N rows of the table", 1, len(view),
        **kept("q_bars_n", min(30, len(view)), bounds=(1, len(view)), url="bars"),
    )  # fmt: skip
else:
    n_bars = 1
shown = view.head(n_bars)
labels = [" | ".join(map(str, row)) for row in shown[[c for c in index if c != "variant"]].to_numpy()]
groups = shown["variant"] + (" · " + shown["method"] if has_methods else "")
bars = quality_bars(
    [f"{group} | {label}" for group, label in zip(groups, labels, strict=True)], shown["average"], groups,
    shown["average low"], shown["average high"], baseline=baseline,
    title=f"Average V-measure over {len(shown_tasks)} tasks, first {n_bars} rows as in the table (± as the table)",
)  # fmt: skip
st.plotly_chart(bars, key="q_bars")
widgets.figure_downloads(bars, f"{stem}_bars", "q_bars_dl")
heat = clustering_heatmap(*heatmap_frames(view, stds), title="V-measure per task (rows as in the table; ± on hover)")
st.plotly_chart(heat, key="q_heat")
widgets.figure_downloads(heat, f"{stem}_heatmap", "q_heat_dl")
gains = track_gains(scores)
if len(gains):
    scatter = track_gain_scatter(gains, title="In-domain gain vs transfer gain, per adapter row (all rows)")
    st.plotly_chart(scatter, key="q_gains")
    widgets.figure_downloads(scatter, f"{stem}_gains", "q_gains_dl")

# ----- Layer profile: V-measure at every layer, from a lens report (analysis.lens; `python -m analysis.lens`)
st.divider()
st.header("Layer profile: clustering quality at every layer")
lens_reports = find_reports(REPO / "results" / "lens")
if not lens_reports:
    st.info("No lens reports under `results/lens`. Make one with "
            "`python -m analysis.lens --adapter adapters/smollm2-135m-embed --out results/lens`.")  # fmt: skip
else:
    report_names = list(lens_reports)
    left, middle, right = st.columns(3)
    report_name = left.selectbox(
        "Lens report", report_names, **kept("q_lens_report", report_names[0], options=report_names, url="lens")
    )
    profiles = read_profiles(lens_reports[report_name])
    lens_tasks = list(profiles) or ["none"]
    lens_task = middle.selectbox(
        "Task", lens_tasks, **kept("q_lens_task", lens_tasks[0], options=lens_tasks, url="lens_task")
    )
    if lens_task in profiles:
        all_poolings = profiles[lens_task]["poolings"]
        lens_poolings = right.multiselect(
            "Poolings", all_poolings, **kept("q_lens_poolings", all_poolings, options=all_poolings, url="lens_pool")
        )
        profile = restrict_profile(profiles[lens_task], lens_poolings)
        figure = layer_profile_figure(profile, f"{report_name}: V-measure per layer on {lens_task} (± k-means seeds)")
        st.plotly_chart(figure, key="q_lens_profile")
        st.caption(" · ".join(
            f"best {variant}: {best['pooling']} at hidden state {best['layer']}, V = {best['v_measure']:.4f}"
            for variant, section in profile["variants"].items() if (best := section["best"])
        ) + f". {profiles[lens_task].get('n_texts', '?')} texts; hidden state 0 is the embeddings.")  # fmt: skip
        lens_stem = widgets.file_stem("layer_profile", report_name, lens_task, *profile["poolings"])
        widgets.downloads_row(
            [
                ("figure", (figure, lens_stem, "q_lens_dl")),
                ("table", (profile_table(profile), lens_stem, "q_lens_csv", "profile CSV")),
                ("array", (profile_array(profile), f"{lens_stem}_v_measure", "q_lens_npy", "V-measure NPY")),
            ]
        )
    else:
        st.info(f"The lens report `{report_name}` has no layer profile.")
