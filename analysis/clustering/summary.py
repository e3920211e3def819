"""Tables of a results folder's cells: rows = variant x prompt x pooling x layer, columns = tasks + average.

Rows and tasks have one canonical order whatever order the cells were read in (tasks: the local track's
order, then others by name; rows: variant by name, prompts and poolings in their registries' order, layers
by index), so a summary regenerates identically from its cells. The pages' filtering, re-averaging and
top-rows selection live here too, so they are tested without a page.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from analysis.clustering.grid import BASELINE_MODEL
from core.data import LOCAL_TASKS, TRANSFER_TASKS

INDEX = ["variant", "prompt", "pooling", "layer"]
# The index when a table holds a non-plain method (core.encoding.methods); plain-only tables keep INDEX, so summaries
# from before methods existed regenerate identically.
METHOD_INDEX = ["variant", "method", "prompt", "pooling", "layer"]
# Averages over one track's tasks, shown beside the overall average when a table holds more than one track.
TRACK_AVERAGES = {"local_average": tuple(LOCAL_TASKS), "transfer_average": tuple(TRANSFER_TASKS)}
AVERAGES = ("average", *TRACK_AVERAGES)


def index_columns(table: Any) -> list[str]:
    """The row columns of a summary table or a ``filter_rows`` view: METHOD_INDEX where it has a method column."""
    names = [*table.index.names, *table.columns]
    return METHOD_INDEX if "method" in names else INDEX


def cell_row(cell: dict[str, Any], with_method: bool) -> tuple[str, ...]:
    """A cell's row in a summary table (``with_method``: the table has a method column)."""
    from analysis.clustering.store import cell_method
    from core.encoding.methods import stored_prompt_name

    method = (cell_method(cell),) if with_method else ()
    return (cell["variant"], *method, stored_prompt_name(cell["prompt"]), cell["pooling"], str(cell["layer"]))


def task_order(tasks: Sequence[str]) -> list[str]:
    """The local track's tasks in its order, then the transfer track's, then any other task by name."""
    order = [*LOCAL_TASKS, *TRANSFER_TASKS]
    return sorted(dict.fromkeys(tasks), key=lambda t: (order.index(t), "") if t in order else (len(order), t))


def _row_key(row: tuple[str, ...]) -> tuple[Any, ...]:
    from core.encoding.methods import METHOD_KINDS
    from core.encoding.pooling import POOLING_MODES
    from core.encoding.prompts import PROMPTS

    variant, prompt, pooling, layer = row[0], *row[-3:]
    # Methods: plain first, then in core.encoding.methods' order, then by spec (tp:1-3 before tp:1-6).
    method = [
        (METHOD_KINDS.index(m.split(":")[0]) if m.split(":")[0] in METHOD_KINDS else len(METHOD_KINDS), m)
        for m in row[1:-3]
    ]
    prompts, poolings = list(PROMPTS), list(POOLING_MODES)
    prompt_rank = (prompts.index(prompt), "") if prompt in prompts else (len(prompts), prompt)
    pooling_rank = (poolings.index(pooling), "") if pooling in poolings else (len(poolings), pooling)
    try:
        layer_rank: tuple[int, int, str] = (0, int(layer), "")
    except ValueError:
        layer_rank = (1, 0, layer)
    return (variant, *method, prompt_rank, pooling_rank, layer_rank)


def summary_tables(cells: Sequence[dict[str, Any]]) -> tuple[Any, Any]:
    """(scores, stds) DataFrames: rows = variant x prompt x pooling x layer, columns = tasks + ``average``.

    Where a cell holds a non-plain method the rows are variant x method x prompt x pooling x layer
    (``METHOD_INDEX``). The average is over the row's tasks; it is NaN when a row lacks a task the others have.
    An average's std is over k-means seeds of the per-seed task average (seed i of every task together), so it
    is the spread of the number a reader compares, not a mean of the tasks' stds.
    """
    import pandas as pd

    from analysis.clustering.store import cell_method

    index = METHOD_INDEX if any(cell_method(c) != "plain" for c in cells) else INDEX
    records = [
        {
            **dict(zip(index, cell_row(c, index is METHOD_INDEX), strict=True)),
            "task": c["task"]["name"],
            "v": c["scores"]["v_measure"],
            "std": c["scores"]["v_measure_std"],
            "per_seed": tuple(c["scores"].get("v_measure_per_seed") or ()),
        }
        for c in cells
    ]
    frame = pd.DataFrame.from_records(records)
    tasks = task_order(frame["task"])
    rows = sorted(dict.fromkeys(map(tuple, frame[index].itertuples(index=False))), key=_row_key)
    scores = frame.pivot_table(index=index, columns="task", values="v", aggfunc="first", sort=False)
    stds = frame.pivot_table(index=index, columns="task", values="std", aggfunc="first", sort=False)
    scores = scores.reindex(index=pd.MultiIndex.from_tuples(rows, names=index), columns=tasks)
    stds = stds.reindex(index=scores.index, columns=tasks)
    per_seed = frame.pivot_table(index=index, columns="task", values="per_seed", aggfunc="first", sort=False)
    per_seed = per_seed.reindex(index=scores.index, columns=tasks)
    averages = {"average": tasks}
    if len([track for track in TRACK_AVERAGES.values() if set(track) & set(tasks)]) > 1:
        averages |= {column: list(track) for column, track in TRACK_AVERAGES.items()}
    for column, columns in averages.items():
        if set(columns) <= set(tasks):
            scores[column] = scores[columns].mean(axis=1, skipna=False)
            stds[column] = [_average_std(per_seed.loc[row, columns]) for row in scores.index]
        else:
            scores[column], stds[column] = math.nan, math.nan
    return scores, stds


def _average_std(per_seed: Any) -> float:
    """Std over k-means seeds of the task average; NaN when a task is missing or the tasks' seed counts differ."""
    import numpy as np

    runs = [seeds for seeds in per_seed if isinstance(seeds, tuple)]
    if len(runs) != len(per_seed) or len({len(seeds) for seeds in runs}) != 1 or len(runs[0]) < 2:
        return math.nan
    return float(np.mean(np.array(runs, dtype=float), axis=0).std())


def task_columns(scores: Any) -> list[str]:
    return [c for c in scores.columns if c not in AVERAGES]


def flat_index(frame: Any) -> Any:
    """A copy whose (variant, [method,] prompt, pooling, layer) index is one ``a | b | c | d`` label per row."""
    flat = frame.copy()
    flat.index = [" | ".join(map(str, row)) for row in frame.index]
    return flat


def filter_rows(
    scores: Any,
    variants: Sequence[str] = (),
    prompts: Sequence[str] = (),
    poolings: Sequence[str] = (),
    tasks: Sequence[str] = (),
    methods: Sequence[str] = (),
) -> Any:
    """The table a reader asked for: rows matching every non-empty filter plus the MiniLM baseline (always kept),
    the chosen tasks (all if none), the average over those tasks, sorted by it, best first. A flat DataFrame."""
    table = scores.reset_index()
    shown = list(tasks) or task_columns(scores)
    chosen = table["variant"] == table["variant"]
    filters = (("variant", variants), ("method", methods), ("prompt", prompts), ("pooling", poolings))
    for column, values in filters:
        if values:
            # A plain-only table has no method column: every row is plain.
            column_values = table[column] if column in table.columns else table["variant"].map(lambda _: "plain")
            chosen &= column_values.isin(list(values))
    view = table[(table["variant"] == BASELINE_MODEL) | chosen].copy()
    view["average"] = view[shown].mean(axis=1, skipna=False)
    tracks = [c for c in TRACK_AVERAGES if c in scores.columns]  # whole-track averages, whatever tasks are shown
    columns = [*index_columns(scores), *shown, "average", *tracks]
    return view[columns].sort_values("average", ascending=False, kind="stable")


SortKey = str  # a task column, "average" or "vs base"
QUALITY_COLUMNS = ("role", "vs base")  # what quality_view adds to a filter_rows view


def base_row_key(key: tuple[str, ...]) -> tuple[str, ...] | None:
    """The row of an adapter row's base model with the same settings (``MODEL+ADAPTER`` -> ``MODEL``); None for a
    row that is not an adapter's."""
    return (key[0].split("+")[0], *key[1:]) if "+" in key[0] else None


def quality_view(scores: Any, view: Any, sort_by: SortKey = "average", ascending: bool = False) -> Any:
    """A ``filter_rows`` view as the Clustering quality page shows it: a ``role`` column (``baseline`` for MiniLM,
    ``adapter`` for ``MODEL+ADAPTER`` rows, else ``base``), ``vs base`` (an adapter row's average minus its base
    model's average with the same prompt, pooling, layer and tasks; NaN otherwise), sorted by ``sort_by``.

    The base row is looked up in ``scores`` (all rows), so it need not pass the view's filters.
    """
    index = index_columns(view)  # with a method column, an adapter row's base row has the same method too
    shown = [c for c in view.columns if c not in (*index, *AVERAGES)]
    table = scores.reset_index()
    averages = dict(zip(map(tuple, table[index].to_numpy()), table[shown].mean(axis=1, skipna=False), strict=True))
    out = view.copy()
    keys = list(map(tuple, out[index].to_numpy()))
    out.insert(
        0, "role", ["baseline" if k[0] == BASELINE_MODEL else "adapter" if "+" in k[0] else "base" for k in keys]
    )
    base = [averages.get(base_row_key(k), math.nan) for k in keys]
    out["vs base"] = out["average"].to_numpy() - base
    if sort_by not in out.columns:
        choices = [c for c in out.columns if c not in (*index, "role")]
        raise ValueError(f"Cannot sort by {sort_by!r}: choose one of {', '.join(choices)}.")
    return out.sort_values(sort_by, ascending=ascending, kind="stable", na_position="last")


def track_gains(scores: Any) -> Any:
    """Per adapter row, its gain over its base model (same method, prompt, pooling, layer) on each track's
    whole average: ``local gain`` (in-domain: the track its pairs were drawn near) and ``transfer gain``.

    A flat DataFrame with the row's index columns and the two gains; empty when ``scores`` lacks either track
    average or has no adapter row. A gain is NaN where the adapter or its base misses a task of that track.
    """
    import pandas as pd

    index = index_columns(scores)
    if not set(TRACK_AVERAGES) <= set(scores.columns):
        return pd.DataFrame(columns=[*index, "local gain", "transfer gain"])
    table = scores.reset_index()
    by_row = {tuple(row[index]): row for _, row in table.iterrows()}
    records = []
    for key, row in by_row.items():
        base = by_row.get(base_row_key(key))
        if base is None:
            continue
        records.append(
            {
                **dict(zip(index, key, strict=True)),
                "local gain": row["local_average"] - base["local_average"],
                "transfer gain": row["transfer_average"] - base["transfer_average"],
            }
        )
    return pd.DataFrame.from_records(records, columns=[*index, "local gain", "transfer gain"])


def heatmap_frames(view: Any, stds: Any) -> tuple[Any, Any]:
    """(scores, stds) of a ``filter_rows`` view's rows and tasks, one flat label per row, for the heatmap."""
    index = index_columns(view)
    # The task columns only: a view may carry quality and uncertainty columns too.
    shown = [c for c in view.columns if c in stds.columns and c not in (*index, *AVERAGES, *QUALITY_COLUMNS)]
    heat = flat_index(view.set_index(index)[shown])
    spread = flat_index(stds[shown]).reindex(heat.index)
    return heat, spread


def top_rows(scores: Any, n: int = 5) -> list[dict[str, Any]]:
    """The ``n`` best non-baseline rows by average, then the MiniLM baseline row(s): records for a table."""
    table = scores.reset_index().sort_values("average", ascending=False, kind="stable")
    best = table[table["variant"] != BASELINE_MODEL].head(n)
    return [*best.to_dict("records"), *table[table["variant"] == BASELINE_MODEL].to_dict("records")]


def markdown_table(scores: Any, stds: Any) -> str:
    tasks = task_columns(scores)
    averages = [c for c in AVERAGES if c in scores.columns]
    head = [*["model" if name == "variant" else name for name in index_columns(scores)], *tasks, *averages]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in scores.index:
        values = []
        for task in tasks:
            v, s = scores.loc[row, task], stds.loc[row, task]
            values.append("" if math.isnan(v) else f"{v:.4f} ± {s:.4f}")
        for column in averages:
            avg, spread = scores.loc[row, column], stds.loc[row, column]
            values.append(
                "" if math.isnan(avg) else f"**{avg:.4f}**" + ("" if math.isnan(spread) else f" ± {spread:.4f}")
            )
        lines.append("| " + " | ".join([*map(str, row), *values]) + " |")
    return "\n".join(lines) + "\n"


def summary_note(cells: Sequence[dict[str, Any]]) -> str:
    """The line above the table: k-means seeds and each task's texts, clusters and max length."""
    sizes = {c["task"]["name"]: (c["task"]["texts"], c["task"]["clusters"], c["max_length"]) for c in cells}
    seeds = sorted({tuple(c["kmeans"]["seeds"]) for c in cells})
    return (
        "V-measure mean ± std over k-means seeds "
        + ", ".join(str(list(s)) for s in seeds)
        + "; tasks (texts, clusters, max_length): "
        + ", ".join(f"{t} ({sizes[t][0]}, {sizes[t][1]}, {sizes[t][2]})" for t in task_order(list(sizes)))
    )


def write_tables(out: Path, cells: Sequence[dict[str, Any]]) -> dict[str, str]:
    """summary.md and summary.csv: what regenerates identically from the cells."""
    from core.runtime.files import atomic_write

    scores, stds = summary_tables(cells)
    with atomic_write(out / "summary.md") as handle:
        handle.write(f"# Clustering grid\n\n{summary_note(cells)}\n\n{markdown_table(scores, stds)}")
    csv = scores.join(stds.add_suffix("_std")).reset_index()
    with atomic_write(out / "summary.csv") as handle:
        csv.to_csv(handle, index=False, float_format="%.6f")
    return {"markdown": str(out / "summary.md"), "csv": str(out / "summary.csv")}


def write_summary(out: Path, cells: Sequence[dict[str, Any]]) -> dict[str, str]:
    """summary.md, summary.csv, summary.html (and summary.png where a browser can render it)."""
    from analysis.plots import clustering_heatmap, png_bytes
    from core.runtime.files import atomic_write

    files = write_tables(out, cells)
    scores, stds = summary_tables(cells)
    figure = clustering_heatmap(
        flat_index(scores), flat_index(stds), title="Clustering V-measure (mean over k-means seeds)"
    )
    with atomic_write(out / "summary.html") as handle:
        handle.write(figure.to_html(include_plotlyjs=True, full_html=True))
    files["html"] = str(out / "summary.html")
    try:
        png = png_bytes(figure)
    except Exception as exc:  # the PNG needs a browser that an offline machine may lack
        files["png_error"] = str(exc).strip().splitlines()[0]
    else:
        with atomic_write(out / "summary.png", "wb") as handle:
            handle.write(png)
        files["png"] = str(out / "summary.png")
    return files
