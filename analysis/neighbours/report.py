"""The neighbourhood report of two spaces: per-text table, movers, cluster names and a summary, as CSV and JSON.

Shared by ``python -m analysis.neighbours`` and the Cluster explorer's downloads, so both give the same tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from analysis.neighbours.diff import NeighbourhoodDiff, movers, neighbourhood_diff
from analysis.neighbours.names import CentroidReader, cluster_names
from core.runtime.errors import ConfigError
from core.runtime.files import atomic_write, write_json

__all__ = ["OUTPUT_FILES", "NeighbourReport", "build_report", "check_out", "neighbour_rows", "write_report"]

OUTPUT_FILES = ("neighbours.csv", "movers.csv", "clusters.csv", "summary.json")
WRITER = "analysis.neighbours"  # summary.json names the writer: only folders it wrote are written again


@dataclass(frozen=True)
class NeighbourReport:
    """Everything the report writes; ``names`` are the two sides (e.g. base, adapter or two run names)."""

    names: tuple[str, str]
    diff: NeighbourhoodDiff
    summary: dict[str, Any]
    neighbours: list[dict[str, Any]]
    movers: list[dict[str, Any]]
    clusters: list[dict[str, Any]]


def neighbour_rows(
    diff: NeighbourhoodDiff, texts: Sequence[str], labels: Sequence[str] | None, names: tuple[str, str]
) -> list[dict[str, Any]]:
    """One row per text: its Jaccard@k, rank change, and its neighbours' indices in each space (``;``-joined)."""
    return [
        {
            "index": i,
            "text": texts[i],
            "label": labels[i] if labels is not None else "",
            f"jaccard_at_{diff.k}": round(float(diff.jaccard[i]), 4),
            "rank_change": round(float(diff.rank_change[i]), 2),
            f"neighbours_{names[0]}": ";".join(map(str, diff.before[i])),
            f"neighbours_{names[1]}": ";".join(map(str, diff.after[i])),
        }
        for i in range(len(texts))
    ]


def side_clusters(vectors: np.ndarray, labels: Sequence[str] | None, n_clusters: int) -> tuple[list[str], str]:
    """Each text's cluster id and what the ids are: the gold labels when ``n_clusters`` is 0 and there are labels,
    else k-means with ``n_clusters`` (0: 8) clusters."""
    from core.metrics import kmeans_labels

    if n_clusters == 0 and labels is not None:
        return [str(label) for label in labels], "gold label"
    k = min(n_clusters or 8, len(vectors))
    return [f"c{c}" for c in kmeans_labels(np.asarray(vectors, dtype=np.float32), k)], f"k-means (k={k})"


def build_report(
    texts: Sequence[str],
    labels: Sequence[str] | None,
    spaces: tuple[np.ndarray, np.ndarray],
    names: tuple[str, str],
    *,
    k: int = 10,
    top: int = 50,
    n_clusters: int = 0,
    words: int = 5,
    centroid_reader: CentroidReader | None = None,
    n_boot: int = 2000,
) -> NeighbourReport:
    """The diff of ``spaces`` (rows = ``texts``), its summary with CIs, the ``top`` movers and, per side, the
    cluster names (gold labels or k-means, see :func:`side_clusters`; ``centroid_reader`` as in ``cluster_names``)."""
    diff = neighbourhood_diff(spaces[0], spaces[1], k)
    summary = {"sides": list(names), **diff.summary(n_boot=n_boot)}
    clusters = []
    for name, vectors in zip(names, spaces, strict=True):
        ids, kind = side_clusters(vectors, labels, n_clusters)
        for cluster in cluster_names(texts, ids, words, vectors=vectors, centroid_reader=centroid_reader):
            clusters.append({"side": name, "clusters": kind, **cluster.row()})
        if kind == "gold label":
            break  # gold clusters are the same texts on both sides: their words are too
    rows = movers(diff, texts, labels, top)
    return NeighbourReport(names, diff, summary, neighbour_rows(diff, texts, labels, names), rows, clusters)


def check_out(out: Path) -> None:
    """Refuse an output folder holding report files this command did not write (no ``summary.json`` of ours)."""
    present = [name for name in OUTPUT_FILES if (out / name).exists()]
    if not present:
        return
    try:
        import json

        ours = json.loads((out / "summary.json").read_text(encoding="utf-8")).get("written_by") == WRITER
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise ConfigError(
            f"{out} already holds {', '.join(present)} that python -m analysis.neighbours did not write; "
            "choose another --out folder or move those files."
        )


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    import pandas as pd

    frame = pd.DataFrame(rows, columns=list(rows[0]) if rows else list(columns))
    with atomic_write(path) as handle:
        frame.to_csv(handle, index=False)


def write_report(report: NeighbourReport, out: str | Path, extra: dict[str, Any] | None = None) -> list[Path]:
    """Write :data:`OUTPUT_FILES` into ``out`` (created), each atomically; ``extra`` goes into summary.json."""
    out = Path(out)
    check_out(out)
    out.mkdir(parents=True, exist_ok=True)
    mover_columns = ("index", "text", "label", "jaccard", "rank_change", "before", "after", "lost", "gained")
    _write_csv(out / "neighbours.csv", report.neighbours, ("index", "text", "label"))
    _write_csv(out / "movers.csv", report.movers, mover_columns)
    _write_csv(out / "clusters.csv", report.clusters, ("side", "clusters", "cluster", "size", "top_words"))
    write_json(out / "summary.json", {**report.summary, **(extra or {}), "written_by": WRITER})
    return [out / name for name in OUTPUT_FILES]
