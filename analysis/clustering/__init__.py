"""Clustering track: every model/adapter x prompt x pooling x layer on labelled tasks, scored as mteb scores.

    python -m analysis.clustering --preset default --out results/clustering
    python -m analysis.clustering --models smollm2-135m,smollm2-135m+adapters/run1 --prompts none,eol,cluster \\
        --poolings mean,last,eos --layers -1,last4 --tasks local,data.csv:text:label --out results/

``--models`` takes packaged names, model folders or hub ids, ``MODEL+ADAPTER_DIR`` (one model in memory gives
two rows: base and adapter), or a bare adapter folder (its base model is read from its metadata). The MiniLM
encoder is always added as a baseline row (mean pooling, no prompt). ``--tasks`` takes ``local`` (the six
local tasks), local task names, ``PATH[:TEXTCOL[:LABELCOL]]`` files, or mteb task names
(``TwentyNewsgroupsClustering.v2``: needs the hub).

``--methods plain,echo,tp,metaeol`` adds training-free methods (``core.encoding.methods``; ensembles as
``ensemble:eol+summarize``, TP ranges as ``tp:1-6``). ``--prompts`` span plain only: echo, tp and ensembles
bring their own template(s), one row group per method, named by the method's template. Cells record their
method; a plain cell's key is what it was before methods existed, and tables gain a method column only when
they hold a non-plain method. One loaded model serves every method.

Scoring equals mteb's ``ClusteringEvaluator`` on the same embeddings: ``MiniBatchKMeans(n_clusters=k,
batch_size=500, n_init="auto", random_state=seed)`` + ``v_measure_score``, repeated over k-means seeds (mean and
std), plus AMI and ARI. One forward per (model, adapter on/off, prompt, task) serves every pooling and layer.
Each cell is one JSON under ``OUT/cells/``; a cell whose JSON exists with the same key is skipped, so an
interrupted run resumes. ``OUT/summary.{md,csv,html}`` hold the table and figure of every cell in OUT (a run adds rows).

Subsampling is mteb's (``random.Random(seed).sample(range(n), size)``, seed 42). Sizes and max lengths of the
local tasks were set so the default preset (SmolLM2 x 4 prompts x 5 poolings x 6 tasks + MiniLM) fits in 30 min
at ~600 wrapped tokens/s (fp32, 2 cores). Wrapped tokens per (prompt, task) measured on the sample, SmolLM2
tokenizer (none / eol / cluster / summarize):

    task          texts (of)   max_len  tokens none/eol/cluster/summarize         truncated
    20ng-s2s      1200 (7528)    128    27.0k / 39.0k / 40.2k / 37.8k               0
    20ng-p2p       256 (7528)    256    45.4k / 47.1k / 47.2k / 46.9k              ~37%
    r8             384 (2189)    256    36.9k / 40.4k / 40.7k / 40.0k               ~9%
    r52            384 (2568)    256    40.7k / 44.1k / 44.4k / 43.8k              ~13%
    trec-coarse   1619 (all)     128    20.6k / 36.8k / 38.4k / 35.1k               0
    trec-fine     1619 (all)     128    same texts as trec-coarse: served by the embedding cache

i.e. ~790k tokens (~22 min) for the default grid, plus k-means (5 seeds x 126 cells, single-threaded: ~2 min).

Modules: ``grid`` (specs, presets, budgets), ``sampling`` and ``mteb_tasks`` (which texts; mteb tasks both ways),
``mteb_encoder`` (an Encoder as an mteb model), ``store`` (cells on disk), ``provenance``, ``runner``, ``summary``
(tables, page views), ``card`` (adapter cards, full tracks only), ``__main__`` (CLI). The scorer is
``core.metrics.score_embeddings``, shared with training's dev score. Importing this package loads no mteb.

Each new cell also stores bootstrap replicates over its texts (``uncertainty``: V-measure, the cosine gap and its
scale-free forms), so tables give CIs over texts and paired base-vs-adapter differences (``summary_uncertainty``).

May import: ``core``, ``analysis.plots``, ``analysis.stats``.
"""

from __future__ import annotations

from analysis.clustering.card import TRACKS, card_tracks, record_adapter_scores
from analysis.clustering.grid import (
    BASELINE_MODEL,
    BASELINE_POOLING,
    PRESETS,
    TASK_BUDGETS,
    GridConfig,
    ModelSpec,
    TaskBudget,
    TaskPlan,
    Variant,
    parse_model_specs,
    plan_task,
)
from analysis.clustering.runner import GridResult, run_grid
from analysis.clustering.sampling import check_clusterable
from analysis.clustering.store import folder_cells
from analysis.clustering.summary import (
    filter_rows,
    heatmap_frames,
    quality_view,
    summary_tables,
    top_rows,
    track_gains,
    write_summary,
)
from core.metrics import DEFAULT_KMEANS_SEEDS, KMEANS_BATCH_SIZE, score_embeddings
from core.runtime.errors import GridError

__all__ = [
    "BASELINE_MODEL",
    "BASELINE_POOLING",
    "DEFAULT_KMEANS_SEEDS",
    "KMEANS_BATCH_SIZE",
    "PRESETS",
    "TASK_BUDGETS",
    "TRACKS",
    "GridConfig",
    "GridError",
    "GridResult",
    "ModelSpec",
    "TaskBudget",
    "TaskPlan",
    "Variant",
    "card_tracks",
    "check_clusterable",
    "filter_rows",
    "folder_cells",
    "heatmap_frames",
    "parse_model_specs",
    "plan_task",
    "quality_view",
    "record_adapter_scores",
    "run_grid",
    "score_embeddings",
    "summary_tables",
    "top_rows",
    "track_gains",
    "write_summary",
]
