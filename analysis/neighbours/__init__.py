"""How two embeddings of the same texts differ, text by text: neighbourhoods, movers, named clusters, search.

Owns: exact cosine k-NN (``knn``), the neighbourhood diff (Jaccard@k and rank change per text, corpus means with
bootstrap CIs, the biggest movers; cached on disk by content: ``diff``), c-TF-IDF cluster names with a seam for
the lens's centroid reading (``names``), query search over both spaces (``search``), pairs of saved
``core.embed`` runs (``runs``), its figures (``figures``) and ``python -m analysis.neighbours`` (``cli``).

May import: ``core`` (runtime, data, encoding, models), ``analysis.stats``, ``analysis.projections``,
``analysis.sides``, ``core.metrics``. Nothing in ``core`` imports it; pages do.
"""

from __future__ import annotations

from analysis.neighbours.diff import NeighbourhoodDiff, movers, neighbourhood_diff
from analysis.neighbours.knn import nearest, unit_rows
from analysis.neighbours.names import CentroidReader, ClusterName, c_tf_idf, cluster_names
from analysis.neighbours.runs import RunPair, load_pair, load_run
from analysis.neighbours.search import search

__all__ = [
    "CentroidReader",
    "ClusterName",
    "NeighbourhoodDiff",
    "RunPair",
    "c_tf_idf",
    "cluster_names",
    "load_pair",
    "load_run",
    "movers",
    "nearest",
    "neighbourhood_diff",
    "search",
    "unit_rows",
]
