"""Summary tables: one order whatever order the cells come in, the pages' views, and the committed summary."""

from __future__ import annotations

import math
import random

import pytest

from analysis.clustering import filter_rows, folder_cells, heatmap_frames, summary_tables, top_rows
from analysis.clustering.summary import write_tables
from core.runtime.paths import REPO_ROOT

LOCAL_TRACK = REPO_ROOT / "results" / "local-track"


def cell(variant: str, prompt: str, pooling: str, task: str, v: float, texts: int = 10) -> dict:
    return {
        "variant": variant,
        "prompt": {"name": prompt, "template": "{text}"},
        "pooling": pooling,
        "layer": "-1",
        "max_length": 128,
        "task": {"name": task, "texts": texts, "clusters": 2},
        "kmeans": {"seeds": [42]},
        "scores": {"v_measure": v, "v_measure_std": 0.01},
    }


CELLS = [
    cell(variant, prompt, pooling, task, v)
    for variant, prompt, pooling, v in [
        ("m", "none", "mean", 0.2),
        ("m", "eol", "last", 0.6),
        ("m", "none", "last", 0.3),
        ("m+a", "eol", "last", 0.7),
        ("minilm", "none", "mean", 0.4),
    ]
    for task in ("r8", "20ng-s2s", "zzz")
]


def test_rows_and_tasks_have_one_order_whatever_the_cells_order(tmp_path):
    shuffled = list(CELLS)
    random.Random(3).shuffle(shuffled)
    scores, _ = summary_tables(CELLS)
    assert list(scores.columns) == ["20ng-s2s", "r8", "zzz", "average"]  # the local track's order, then by name
    assert list(scores.index) == [
        ("m", "none", "mean", "-1"),
        ("m", "none", "last", "-1"),
        ("m", "eol", "last", "-1"),
        ("m+a", "eol", "last", "-1"),
        ("minilm", "none", "mean", "-1"),
    ]  # variant by name; prompts and poolings in their registries' order
    for folder, cells in (("a", CELLS), ("b", shuffled)):
        (tmp_path / folder).mkdir()
        write_tables(tmp_path / folder, cells)
    for name in ("summary.md", "summary.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_filter_rows_keeps_the_baseline_and_reaverages_over_the_shown_tasks():
    scores, stds = summary_tables([*CELLS, cell("m", "eol", "last", "r8", 0.6)])
    view = filter_rows(scores, prompts=["eol"], tasks=["r8"])
    assert list(view["variant"]) == ["m+a", "m", "minilm"]  # sorted by the re-averaged column, best first
    assert list(view.columns) == ["variant", "prompt", "pooling", "layer", "r8", "average"]
    assert list(view["average"]) == pytest.approx([0.7, 0.6, 0.4])
    assert len(filter_rows(scores)) == len(scores)
    heat, spread = heatmap_frames(view, stds)
    assert list(heat.index) == ["m+a | eol | last | -1", "m | eol | last | -1", "minilm | none | mean | -1"]
    assert list(heat.columns) == ["r8"] and list(spread.index) == list(heat.index)


def test_top_rows_are_the_best_non_baseline_rows_then_the_baseline():
    scores, _ = summary_tables(CELLS)
    rows = top_rows(scores, 2)
    assert [(r["variant"], r["prompt"], r["pooling"]) for r in rows] == [
        ("m+a", "eol", "last"),
        ("m", "eol", "last"),
        ("minilm", "none", "mean"),
    ]


def test_an_average_std_is_the_spread_of_the_per_seed_task_average():
    def seeded(task: str, per_seed: list[float]) -> dict:
        row = cell("m", "eol", "last", task, sum(per_seed) / len(per_seed))
        row["scores"] |= {"v_measure_per_seed": per_seed}
        return row

    # The tasks' seeds move against each other: each task has a spread, their average has none.
    scores, stds = summary_tables([seeded("r8", [0.4, 0.6]), seeded("r52", [0.6, 0.4])])
    assert scores.loc[("m", "eol", "last", "-1"), "average"] == pytest.approx(0.5)
    assert stds.loc[("m", "eol", "last", "-1"), "average"] == pytest.approx(0.0)
    _, stds = summary_tables([seeded("r8", [0.4, 0.6]), seeded("r52", [0.4, 0.6])])
    assert stds.loc[("m", "eol", "last", "-1"), "average"] == pytest.approx(0.1)
    _, stds = summary_tables([seeded("r8", [0.4, 0.6]), seeded("r52", [0.4, 0.6, 0.5])])  # other seeds: unknown
    assert math.isnan(stds.loc[("m", "eol", "last", "-1"), "average"])


@pytest.mark.skipif(not (LOCAL_TRACK / "cells").is_dir(), reason="no committed local-track cells")
def test_the_committed_local_track_summary_regenerates_identically(tmp_path):
    write_tables(tmp_path, folder_cells(LOCAL_TRACK, []))
    for name in ("summary.md", "summary.csv"):
        assert (tmp_path / name).read_text() == (LOCAL_TRACK / name).read_text(), name


def test_quality_view_marks_the_baseline_and_the_adapter_gain_and_sorts():
    from analysis.clustering import quality_view
    from analysis.plots import clustering_bars

    scores, _ = summary_tables(CELLS)
    view = filter_rows(scores, variants=["m+a"])  # the base row is filtered out but still the reference
    table = quality_view(scores, view)
    roles = dict(zip(table["variant"], table["role"], strict=True))
    assert roles == {"m+a": "adapter", "minilm": "baseline"}
    gain = table.set_index("variant")["vs base"]
    assert gain["m+a"] == pytest.approx(0.7 - 0.6) and math.isnan(gain["minilm"])
    everything = quality_view(scores, filter_rows(scores), sort_by="vs base")
    assert everything["variant"].iloc[0] == "m+a"  # the only row with a gain first, NaN last
    assert list(quality_view(scores, filter_rows(scores), "r8", ascending=True)["r8"]) == [0.2, 0.3, 0.4, 0.6, 0.7]
    with pytest.raises(ValueError, match="Cannot sort"):
        quality_view(scores, view, sort_by="nope")
    figure = clustering_bars(everything, baseline=0.4)
    assert figure.layout.shapes[0].y0 == 0.4 and "baseline" in figure.layout.annotations[0].text
    assert figure.layout.legend.title.text == "variant / pooling"


def test_a_table_of_both_tracks_shows_each_tracks_average_beside_the_overall_one():
    from core.data import LOCAL_TASKS, TRANSFER_TASKS

    tasks = [*LOCAL_TASKS, *TRANSFER_TASKS]
    cells = [cell("m", "none", "mean", t, 0.2 if t in LOCAL_TASKS else 0.6) for t in tasks]
    cells += [cell("minilm", "none", "mean", t, 0.4) for t in LOCAL_TASKS]  # no transfer scores yet
    scores, stds = summary_tables(cells)
    assert list(scores.columns)[-3:] == ["average", "local_average", "transfer_average"]
    mine = scores.loc[("m", "none", "mean", "-1")]
    assert mine["local_average"] == pytest.approx(0.2) and mine["transfer_average"] == pytest.approx(0.6)
    assert mine["average"] == pytest.approx((0.2 * len(LOCAL_TASKS) + 0.6 * len(TRANSFER_TASKS)) / len(tasks))
    baseline = scores.loc[("minilm", "none", "mean", "-1")]
    assert baseline["local_average"] == pytest.approx(0.4) and baseline.isna()["transfer_average"]
    assert heatmap_frames(filter_rows(scores), stds)[0].columns.tolist() == tasks
    # A single track's table keeps its one average column (the committed summaries stay as they are).
    assert list(summary_tables(cells[: len(LOCAL_TASKS)])[0].columns)[-1] == "average"


def test_quality_view_compares_methods_each_against_its_own_base_row():
    from analysis.clustering import quality_view

    def with_method(method: str, variant: str, v: float) -> list[dict]:
        return [{**cell(variant, "eol", "last", task, v), "method": method} for task in ("r8", "zzz")]

    cells = [
        *with_method("plain", "m", 0.5), *with_method("plain", "m+a", 0.6),
        *with_method("echo", "m", 0.3), *with_method("echo", "m+a", 0.45),
        *with_method("plain", "minilm", 0.4),
    ]  # fmt: skip
    scores, _ = summary_tables(cells)
    assert "method" in scores.index.names
    table = quality_view(scores, filter_rows(scores, methods=["echo"]))
    rows = {(v, m): gain for v, m, gain in zip(table["variant"], table["method"], table["vs base"], strict=True)}
    assert set(rows) == {("m", "echo"), ("m+a", "echo"), ("minilm", "plain")}  # the baseline is always kept
    assert rows[("m+a", "echo")] == pytest.approx(0.45 - 0.3)  # against the base model under the same method
    with pytest.raises(ValueError, match="Cannot sort by 'nope': choose one of r8, zzz, average, vs base"):
        quality_view(scores, filter_rows(scores, methods=["echo"]), sort_by="nope")


def test_track_gains_show_each_adapter_rows_gain_on_both_tracks_and_the_page_columns_keep_whole_track_averages():
    from analysis.clustering import quality_view, track_gains
    from analysis.plots import track_gain_scatter
    from core.data import LOCAL_TASKS, TRANSFER_TASKS

    def scored(variant: str, local: float, transfer: float, prompt: str = "eol") -> list[dict]:
        return [cell(variant, prompt, "last", t, local if t in LOCAL_TASKS else transfer) for t in
                [*LOCAL_TASKS, *TRANSFER_TASKS]]  # fmt: skip

    cells = [*scored("m", 0.30, 0.40), *scored("m+run", 0.36, 0.39), *scored("m+run", 0.5, 0.5, prompt="cluster")]
    scores, _ = summary_tables(cells)
    gains = track_gains(scores)
    # The cluster-prompt adapter row has no base row with that prompt: no gain is made up for it.
    assert gains[["variant", "prompt"]].values.tolist() == [["m+run", "eol"]]
    assert gains["local gain"].iloc[0] == pytest.approx(0.06) and gains["transfer gain"].iloc[0] == pytest.approx(-0.01)
    # The page's view keeps both whole-track averages even when only one task is shown.
    view = quality_view(scores, filter_rows(scores, tasks=[next(iter(LOCAL_TASKS))]))
    row = view[(view["variant"] == "m+run") & (view["prompt"] == "eol")].iloc[0]
    assert row["average"] == pytest.approx(0.36) and row["transfer_average"] == pytest.approx(0.39)
    assert row["vs base"] == pytest.approx(0.06)
    figure = track_gain_scatter(gains)
    assert list(figure.data[0].x) == pytest.approx([0.06]) and list(figure.data[0].y) == pytest.approx([-0.01])
    # A table of one track has no gains to show.
    assert track_gains(summary_tables(cells[: len(LOCAL_TASKS)])[0]).empty
