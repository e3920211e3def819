"""Clustering track: every model/adapter x prompt x pooling x layer on labelled tasks, scored as mteb scores.

    python -m analysis.clustering --preset default --out results/clustering
    python -m analysis.clustering --models smollm2-135m,smollm2-135m+adapters/run1 --prompts none,eol,cluster \\
        --poolings mean,last,eos --layers -1,last4 --tasks local,data.csv:text:label --out results/

``--models`` takes packaged names, model folders or hub ids, ``MODEL+ADAPTER_DIR`` (one model in memory gives
two rows: base and adapter), or a bare adapter folder (its base model is read from its metadata). The MiniLM
encoder is always added as a baseline row (mean pooling, no prompt). ``--tasks`` takes ``local`` (the six
local tasks), local task names, ``PATH[:TEXTCOL[:LABELCOL]]`` files, or mteb task names
(``TwentyNewsgroupsClustering.v2``: needs the hub).

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
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import platform
import subprocess
import sys
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np

from analysis.mteb_tasks import (
    TaskUnavailableError,
    check_clusterable,
    get_mteb_clustering_task,
    mteb_task_dataset,
    subsample,
)
from core.data import LOCAL_TASKS, USER_FORMATS, DataError, Dataset, resolve_dataset
from core.errors import GridError, run_cli
from core.files import write_json
from core.paths import REPO_ROOT

TaskKind = Literal["local", "file", "mteb"]

# Bump when scoring changes, so cells scored the old way are redone.
SCORING_VERSION = 1
KMEANS_BATCH_SIZE = 500  # mteb's ClusteringEvaluator default
DEFAULT_KMEANS_SEEDS = (42, 43, 44, 45, 46)  # 42 is mteb's default seed
SUBSAMPLE_SEED = 42
DEFAULT_MAX_LENGTH = 512
BASELINE_MODEL = "minilm"
BASELINE_POOLING = "mean"


@dataclass(frozen=True)
class TaskBudget:
    """How much of a task the grid embeds: an mteb-style sample of ``size`` texts (None: all), cut to ``max_length``."""

    size: int | None
    max_length: int


# Measured and explained in the module docstring.
TASK_BUDGETS: dict[str, TaskBudget] = {
    "20ng-s2s": TaskBudget(1200, 128),
    "20ng-p2p": TaskBudget(256, 256),
    "r8": TaskBudget(384, 256),
    "r52": TaskBudget(384, 256),
    "trec-coarse": TaskBudget(None, 128),
    "trec-fine": TaskBudget(None, 128),
}

PRESETS: dict[str, dict[str, list[str]]] = {
    "default": {
        "models": ["smollm2-135m"],
        "prompts": ["none", "eol", "cluster", "summarize"],
        "poolings": ["mean", "last", "eos", "weighted", "text_mean"],
        "layers": ["-1"],
        "tasks": list(LOCAL_TASKS),
    },
    "smoke": {
        "models": ["smollm2-135m"],
        "prompts": ["none", "cluster"],
        "poolings": ["mean", "last"],
        "layers": ["-1"],
        "tasks": ["trec-coarse"],
    },
}



# --------------------------------------------------------------------------------------------
# Scoring


def score_embeddings(
    embeddings: np.ndarray,
    labels: Sequence[Any],
    seeds: Sequence[int] = DEFAULT_KMEANS_SEEDS,
    batch_size: int = KMEANS_BATCH_SIZE,
) -> dict[str, Any]:
    """V-measure (mteb's main clustering score), AMI and ARI: mean, std and per-seed values over k-means seeds.

    For each seed this is exactly mteb's ``ClusteringEvaluator`` (k = number of distinct labels).
    """
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score, v_measure_score
    from threadpoolctl import threadpool_limits

    if not seeds:
        raise ValueError("score_embeddings needs at least one k-means seed")
    labels = list(labels)
    k = len(set(labels))
    per_seed: dict[str, list[float]] = {"v_measure": [], "ami": [], "ari": []}
    # One thread: on a shared 2-core machine OpenMP's threads made k-means 10-50x slower; labels are identical.
    with threadpool_limits(1):
        for seed in seeds:
            model = MiniBatchKMeans(
                n_clusters=k, batch_size=batch_size, n_init="auto", compute_labels=True, random_state=seed
            )
            predicted = model.fit(embeddings).labels_
            per_seed["v_measure"].append(float(v_measure_score(labels, predicted)))
            per_seed["ami"].append(float(adjusted_mutual_info_score(labels, predicted)))
            per_seed["ari"].append(float(adjusted_rand_score(labels, predicted)))
    scores: dict[str, Any] = {}
    for metric, values in per_seed.items():
        scores[metric] = float(np.mean(values))
        scores[f"{metric}_std"] = float(np.std(values))
        scores[f"{metric}_per_seed"] = values
    return scores


# --------------------------------------------------------------------------------------------
# Grid specification


@dataclass(frozen=True)
class ModelSpec:
    """A model, optionally with a LoRA adapter; with an adapter it yields a base row and an adapter row."""

    name: str
    adapter: str | None = None

    @property
    def label(self) -> str:
        return self.name if self.adapter is None else f"{self.name}+{self.adapter}"


@dataclass(frozen=True)
class Variant:
    """One row source: a model with its adapter on or off."""

    model: ModelSpec
    use_adapter: bool

    @property
    def label(self) -> str:
        if self.use_adapter and self.model.adapter is not None:
            return f"{Path(self.model.name).name}+{Path(self.model.adapter).name}"
        return Path(self.model.name).name


def parse_model_specs(items: Sequence[str]) -> list[ModelSpec]:
    """``NAME``, ``NAME+ADAPTER_DIR`` or ``ADAPTER_DIR`` (base model from its ``embedding_lens.json``)."""
    specs: list[ModelSpec] = []
    for raw in items:
        item = raw.strip()
        if not item:
            continue
        adapter: str | None = None
        if "+" in item:
            item, adapter = (part.strip() for part in item.split("+", 1))
        elif (Path(item) / "adapter_config.json").is_file():
            adapter, meta_path = item, Path(item) / "embedding_lens.json"
            meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
            if not meta.get("base_model"):
                raise GridError(f"adapter {item} does not name its base model; write it as MODEL+{item}")
            item = str(meta["base_model"])
        if adapter is not None and not (Path(adapter).expanduser() / "adapter_config.json").is_file():
            raise GridError(f"no adapter at {adapter} (no adapter_config.json)")
        specs.append(ModelSpec(item, adapter))
    if not specs:
        raise GridError("no models given")
    return list(dict.fromkeys(specs))


@dataclass
class TaskPlan:
    """A task as named on the command line; ``load`` gives its full labelled Dataset."""

    spec: str
    kind: TaskKind
    name: str
    budget: TaskBudget
    load: Callable[[], Dataset]


def expand_task_specs(items: Sequence[str]) -> list[str]:
    out: list[str] = []
    for raw in items:
        item = raw.strip()
        if item == "local":
            out.extend(LOCAL_TASKS)
        elif item:
            out.append(item)
    if not out:
        raise GridError("no tasks given")
    return list(dict.fromkeys(out))


def _looks_like_file(spec: str) -> bool:
    head = spec.split(":", 1)[0]
    return Path(spec).is_file() or Path(head).suffix.lower() in USER_FORMATS or "/" in spec


def plan_task(spec: str, max_texts: int | None = None, max_length: int | None = None) -> TaskPlan:
    """Check a task name or file now; local and file data are loaded now, mteb data only when run."""
    if spec in LOCAL_TASKS:
        kind: TaskKind = "local"
        budget = TASK_BUDGETS.get(spec, TaskBudget(None, DEFAULT_MAX_LENGTH))
    elif _looks_like_file(spec):
        kind, budget = "file", TaskBudget(None, DEFAULT_MAX_LENGTH)
    else:
        kind, budget = "mteb", TaskBudget(None, DEFAULT_MAX_LENGTH)
    if max_texts is not None:
        budget = replace(budget, size=max_texts if budget.size is None else min(budget.size, max_texts))
    if max_length is not None:
        budget = replace(budget, max_length=max_length)
    if kind != "mteb":
        try:
            dataset = resolve_dataset(spec)
        except (DataError, ValueError, OSError) as exc:
            raise GridError(f"task {spec}: {exc}") from None
        plan = TaskPlan(spec, kind, dataset.name, budget, lambda: dataset)
        check_task_data(plan, dataset)
        return plan
    try:
        task = get_mteb_clustering_task(spec)
    except (KeyError, ValueError) as exc:
        raise GridError(
            f"unknown task {spec!r}: not a local task ({', '.join(LOCAL_TASKS)}), not a file "
            f"({'/'.join(USER_FORMATS)}), and mteb says: {exc}"
        ) from None

    def load() -> Dataset:
        data = mteb_task_dataset(task)
        if plan.budget.size is None:  # mteb's own cap for this task, as its evaluation would embed
            fraction = getattr(task, "max_fraction_of_documents_to_embed", None)
            if getattr(task, "max_document_to_embed", None) is not None:
                plan.budget = replace(plan.budget, size=int(task.max_document_to_embed))
            elif fraction is not None:
                plan.budget = replace(plan.budget, size=max(2, int(fraction * len(data))))
        return data

    plan = TaskPlan(spec, "mteb", spec, budget, load)
    return plan


def check_task_data(plan: TaskPlan, dataset: Dataset) -> Dataset:
    """The sample the grid embeds; GridError unless it has labels, >= 2 clusters and enough texts."""
    try:
        check_clusterable(dataset.name, dataset.labels, len(dataset))
        sample = subsample(dataset, plan.budget.size, SUBSAMPLE_SEED)
        # Against the full task's labels: a sample smaller than the number of clusters is not that task.
        check_clusterable(f"{dataset.name} (sample of {len(sample)})", dataset.labels, len(sample))
        check_clusterable(f"{dataset.name} (sample of {len(sample)})", sample.labels, len(sample))
    except ValueError as exc:
        raise GridError(f"task {plan.spec}: {exc}") from None
    return sample


@dataclass
class GridConfig:
    models: list[ModelSpec]
    prompts: list[str]
    poolings: list[str]
    layers: list[str]
    tasks: list[str]
    out: Path
    kmeans_seeds: tuple[int, ...] = DEFAULT_KMEANS_SEEDS
    max_texts: int | None = None
    max_length: int | None = None
    precision: str = "auto"
    normalize: bool = False
    baseline: bool = True
    cache: bool = True
    progress: bool = True


# --------------------------------------------------------------------------------------------
# Provenance


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in ("torch", "transformers", "mteb", "scikit-learn", "numpy", "peft", "sentence-transformers"):
        try:
            versions[package] = importlib_metadata.version(package)
        except importlib_metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def git_state() -> dict[str, Any]:
    """HEAD and whether the tree has changes; ``None``s where there is no git or no repository."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=False
        )
        status = subprocess.run(
            ["git", "status", "--porcelain"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    if head.returncode != 0:
        return {"commit": None, "dirty": None}
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip()) if status.returncode == 0 else None}


# --------------------------------------------------------------------------------------------
# Cells


def cell_key(
    identity: dict[str, Any],
    prompt_template: str,
    pooling: str,
    layer: str,
    attention_layer: int | None,
    precision: str,
    max_length: int,
    dataset: Dataset,
    budget: TaskBudget,
    seeds: Sequence[int],
    normalize: bool,
) -> dict[str, Any]:
    """Everything that determines a cell's scores."""
    from core.encoder import ENGINE_VERSION

    return {
        **identity,
        "engine": ENGINE_VERSION,
        "scoring": SCORING_VERSION,
        "prompt": prompt_template,
        "pooling": pooling,
        "layer": layer,
        "attention_layer": attention_layer if pooling == "attention" else None,
        "precision": precision,
        "max_length": max_length,
        "dataset_sha256": dataset.sha256,
        "subsample_size": budget.size,
        "subsample_seed": SUBSAMPLE_SEED if budget.size is not None else None,
        "kmeans_seeds": list(seeds),
        "kmeans_batch_size": KMEANS_BATCH_SIZE,
        "normalize": normalize,
    }


def cell_id(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)[:60]


def cell_path(out: Path, task: str, variant: str, prompt: str, pooling: str, layer: str, key: dict[str, Any]) -> Path:
    name = f"{_slug(variant)}__{_slug(prompt)}__{pooling}__L{_slug(layer)}__{cell_id(key)}.json"
    return out / "cells" / _slug(task) / name


def read_cell(path: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The stored cell if it is complete and made with this key; None means: compute it."""
    try:
        cell = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(cell, dict) or cell.get("key") != key or "scores" not in cell:
        return None
    return cell


# --------------------------------------------------------------------------------------------
# Running


@dataclass
class GridResult:
    cells: list[dict[str, Any]] = field(default_factory=list)
    computed: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0
    # task -> [texts, encode seconds, tokens] over groups that ran a forward
    throughput: dict[str, list[float]] = field(default_factory=lambda: defaultdict(lambda: [0.0, 0.0, 0.0]))
    files: dict[str, str] = field(default_factory=dict)


class _Models:
    """Loads each model once, on first need; identity (hashes) without loading where the weights are a folder."""

    def __init__(self, precision: str, cache: bool):
        self.precision = precision
        self.cache = cache
        self._loaded: dict[ModelSpec, Any] = {}
        self._encoders: dict[tuple[ModelSpec, int], Any] = {}

    def identity(self, spec: ModelSpec, use_adapter: bool) -> dict[str, Any]:
        from core.adapters import adapter_hash
        from core.models import folder_weights_hash, resolve_model_path

        if spec in self._loaded:
            return self._loaded[spec].identity(use_adapter)
        path = resolve_model_path(spec.name)
        if not Path(path).is_dir():  # a hub id: its hash needs the weights
            return self.loaded(spec).identity(use_adapter)
        return {
            "model": spec.name,
            "weights_sha256": folder_weights_hash(path),
            "adapter_sha256": adapter_hash(Path(spec.adapter).expanduser()) if use_adapter and spec.adapter else None,
        }

    def loaded(self, spec: ModelSpec) -> Any:
        from core.models import load_model

        if spec not in self._loaded:
            self._loaded, self._encoders = {}, {}  # one model in memory at a time
            self._loaded[spec] = load_model(spec.name, spec.adapter)
        return self._loaded[spec]

    def encoder(self, spec: ModelSpec, max_length: int) -> Any:
        from core.encoder import Encoder

        loaded = self.loaded(spec)
        if (spec, max_length) not in self._encoders:
            self._encoders[(spec, max_length)] = Encoder(
                loaded,
                prompt="none",
                pooling="mean",
                layer=-1,
                precision=self.precision,  # type: ignore[arg-type]
                max_length=max_length,
                cache=self.cache,
            )
        return self._encoders[(spec, max_length)]

    def is_causal(self, spec: ModelSpec) -> bool:
        from core.models import resolve_model_path

        if spec in self._loaded:
            return bool(self._loaded[spec].is_causal)
        from transformers import AutoConfig

        from core.models import is_causal_config

        return is_causal_config(AutoConfig.from_pretrained(resolve_model_path(spec.name)))


def _variants(models: Sequence[ModelSpec], baseline: bool) -> list[Variant]:
    variants: list[Variant] = []
    for spec in models:
        variants.append(Variant(spec, False))
        if spec.adapter is not None:
            variants.append(Variant(spec, True))
    if baseline and not any(v.model.name == BASELINE_MODEL and not v.use_adapter for v in variants):
        variants.append(Variant(ModelSpec(BASELINE_MODEL), False))
    return list(dict.fromkeys(variants))


def _validate_grid(config: GridConfig) -> None:
    from core.pooling import POOLING_MODES, LayerChoice
    from core.prompts import resolve_prompt

    for prompt in config.prompts:
        try:
            resolve_prompt(prompt)
        except (TypeError, ValueError) as exc:
            raise GridError(str(exc)) from None
    for pooling in config.poolings:
        if pooling not in POOLING_MODES:
            raise GridError(f"unknown pooling {pooling!r}; choose from {', '.join(POOLING_MODES)}")
    for layer in config.layers:
        try:
            LayerChoice.parse(layer)
        except ValueError as exc:
            raise GridError(str(exc)) from None
    if not config.kmeans_seeds:
        raise GridError("at least one k-means seed is needed")
    if not (config.prompts and config.poolings and config.layers):
        raise GridError("prompts, poolings and layers must each name at least one value")


def run_grid(config: GridConfig) -> GridResult:
    """Score every missing cell of the grid, writing each cell's JSON as soon as it is scored."""
    from tqdm.auto import tqdm

    from core.encoder import resolve_precision
    from core.models import ModelNotFoundError
    from core.pooling import LayerChoice
    from core.prompts import resolve_prompt

    started = time.perf_counter()
    _validate_grid(config)
    plans = [plan_task(spec, config.max_texts, config.max_length) for spec in expand_task_specs(config.tasks)]
    variants = _variants(config.models, config.baseline)
    precision = resolve_precision(config.precision)  # type: ignore[arg-type]
    layers = [str(LayerChoice.parse(layer)) for layer in config.layers]
    prompts = [resolve_prompt(p) for p in dict.fromkeys(config.prompts)]
    poolings = list(dict.fromkeys(config.poolings))
    models = _Models(precision, config.cache)
    result = GridResult()
    versions, git = package_versions(), git_state()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)

    try:
        causal = {spec: models.is_causal(spec) for spec in {v.model for v in variants}}
    except (ModelNotFoundError, OSError, ValueError) as exc:
        raise GridError(str(exc).splitlines()[0]) from None
    groups = [(v, plan, p) for v in variants for plan in plans for p in (prompts if causal[v.model] else prompts[:1])]
    bar = tqdm(total=len(groups), desc="clustering grid", unit="group", disable=not config.progress)
    samples: dict[str, Dataset | None] = {}
    for variant, plan, prompt in groups:
        bar.set_postfix_str(f"{variant.label} | {plan.name} | {prompt.name}")
        if plan.spec not in samples:
            try:
                samples[plan.spec] = check_task_data(plan, plan.load())
            except (TaskUnavailableError, GridError) as exc:
                samples[plan.spec] = None
                result.errors.append(str(exc))
        sample = samples[plan.spec]
        if sample is None:
            bar.update(1)
            continue
        is_causal = causal[variant.model]
        if not is_causal:
            prompt = resolve_prompt("none")  # a bidirectional encoder gets the text alone
        combos = [(pool, layer) for pool in poolings for layer in layers] if is_causal else [(BASELINE_POOLING, "-1")]
        try:
            identity = models.identity(variant.model, variant.use_adapter)
        except (ModelNotFoundError, OSError, ValueError) as exc:
            raise GridError(str(exc).splitlines()[0]) from None
        todo: list[tuple[str, str, dict[str, Any], Path]] = []
        for pooling, layer in combos:
            key = cell_key(
                identity,
                prompt.template,
                pooling,
                layer,
                -1,
                precision,
                plan.budget.max_length,
                sample,
                plan.budget,
                config.kmeans_seeds,
                config.normalize,
            )
            path = cell_path(out, plan.name, variant.label, prompt.name, pooling, layer, key)
            stored = read_cell(path, key)
            if stored is not None:
                result.cells.append(stored)
                result.skipped += 1
            else:
                todo.append((pooling, layer, key, path))
        if todo:
            try:
                cells = _compute_group(models, variant, plan, sample, prompt, todo, config, precision, versions, git)
            except (ModelNotFoundError, FileNotFoundError, ValueError) as exc:
                # Bad model/adapter/layer for this model; cells scored so far are already on disk.
                raise GridError(f"{variant.label} on {plan.name}: {str(exc).splitlines()[0]}") from None
            result.cells.extend(cells)
            result.computed += len(cells)
            timing = cells[0]["timing"]
            if timing["forward_batches"]:
                stats = result.throughput[plan.name]
                stats[0] += timing["texts"]
                stats[1] += timing["encode_seconds"]
                stats[2] += timing["tokens"]
        bar.update(1)
    bar.close()
    result.wall_seconds = time.perf_counter() - started
    if result.cells:
        everything = folder_cells(out, result.cells)
        result.files = write_summary(out, everything)
        for spec in config.models:
            if spec.adapter is not None:
                record_adapter_scores(spec, everything, out)
    return result


def record_adapter_scores(spec: ModelSpec, cells: Sequence[dict[str, Any]], out: Path) -> dict[str, Any] | None:
    """Write into the adapter's card its row (its own prompt, pooling, layer) beside the best base row
    and the MiniLM baseline, when all three have every task."""
    from core.adapters import record_scores
    from core.prompts import PROMPTS

    meta_path = Path(spec.adapter or "") / "embedding_lens.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    scores, _ = summary_tables(cells)
    complete = scores.dropna()
    base_label = Variant(spec, False).label
    adapter_label = Variant(spec, True).label
    names = [name for name, template in PROMPTS.items() if template == meta.get("prompt")]
    own = (adapter_label, names[0] if names else "custom", meta.get("pooling", "last"), str(meta.get("layer", "-1")))
    base = complete[complete.index.get_level_values("variant") == base_label]
    baseline = complete[complete.index.get_level_values("variant") == BASELINE_MODEL]
    if own not in complete.index or base.empty or baseline.empty:
        return None
    picked = [("adapter", own), ("best prompt-only base", base["average"].idxmax()), ("MiniLM", baseline.index[0])]
    tasks = [c for c in scores.columns if c != "average"]
    rows = [
        {
            "label": f"{role}: {key[0]}, prompt {key[1]}, {key[2]} pooling, layer {key[3]}",
            "scores": {t: round(float(complete.loc[key, t]), 4) for t in tasks},
            "average": round(float(complete.loc[key, "average"]), 4),
        }
        for role, key in picked
    ]
    track = {"tasks": tasks, "rows": rows, "results": str(out)}
    record_scores(spec.adapter, track)
    return track


def folder_cells(out: Path, run_cells: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """This run's cells plus the folder's other cells, so a results folder accumulates runs.

    A stored cell for the same row and task as one of this run's (e.g. made with other settings) is
    superseded by the run's; among stored cells the newest wins. Rows keep the run's order of first
    appearance, the folder's other rows follow in file order.
    """

    def slot(cell: dict[str, Any]) -> tuple[str, ...]:
        return (cell["variant"], cell["prompt"]["name"], cell["pooling"], str(cell["layer"]), cell["task"]["name"])

    stored: dict[tuple[str, ...], dict[str, Any]] = {}
    for path in sorted((out / "cells").glob("*/*.json")):
        try:
            cell = json.loads(path.read_text())
            key = slot(cell)
        except (OSError, ValueError, KeyError, TypeError):
            continue  # an unreadable or foreign file is not a result
        if key not in stored or cell.get("created", "") > stored[key].get("created", ""):
            stored[key] = cell
    chosen = {slot(c): c for c in run_cells}
    for key, cell in stored.items():
        chosen.setdefault(key, cell)
    return list(chosen.values())


def _compute_group(
    models: _Models,
    variant: Variant,
    plan: TaskPlan,
    sample: Dataset,
    prompt: Any,
    todo: list[tuple[str, str, dict[str, Any], Path]],
    config: GridConfig,
    precision: str,
    versions: dict[str, str | None],
    git: dict[str, Any],
) -> list[dict[str, Any]]:
    """One forward for every missing (pooling, layer) of this (variant, task, prompt); one JSON per cell."""
    encoder = models.encoder(variant.model, plan.budget.max_length)
    prepared = encoder.prepare(sample.texts, prompt=prompt)
    tokens = sum(len(item.input_ids) for item in prepared)
    truncated = sum(item.truncated for item in prepared)
    calls = [0]
    hook = encoder.loaded.backbone.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # truncation is recorded per cell instead
            begin = time.perf_counter()
            grid = encoder.encode_grid(
                sample.texts,
                [(pooling, layer) for pooling, layer, _, _ in todo],
                prompt=prompt,
                use_adapter=variant.use_adapter if variant.model.adapter is not None else None,
                show_progress=config.progress,
            )
            encode_seconds = time.perf_counter() - begin
    finally:
        hook.remove()
    timing_shared = {
        "texts": len(sample),
        "tokens": tokens,
        "truncated": truncated,
        "encode_seconds": round(encode_seconds, 3),
        "texts_per_second": round(len(sample) / encode_seconds, 2) if encode_seconds > 0 else None,
        "tokens_per_second": round(tokens / encode_seconds, 1) if encode_seconds > 0 else None,
        "forward_batches": calls[0],
        "from_cache": calls[0] == 0,
        "cells_sharing_forward": len(todo),
    }
    cells = []
    for pooling, layer, key, path in todo:
        vectors = grid[(pooling, layer)]
        if config.normalize:
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        begin = time.perf_counter()
        scores = score_embeddings(vectors, sample.labels or [], config.kmeans_seeds)
        score_seconds = time.perf_counter() - begin
        cell = {
            "cell_id": cell_id(key),
            "key": key,
            "variant": variant.label,
            "model": variant.model.name,
            "model_path": encoder.loaded.path,
            "weights_sha256": key["weights_sha256"],
            "adapter": variant.model.adapter if variant.use_adapter else None,
            "adapter_sha256": key["adapter_sha256"],
            "use_adapter": variant.use_adapter,
            "prompt": {"name": prompt.name, "template": prompt.template},
            "pooling": pooling,
            "layer": layer,
            "precision": precision,
            "max_length": plan.budget.max_length,
            "normalize": config.normalize,
            "task": {
                "name": plan.name,
                "spec": plan.spec,
                "kind": plan.kind,
                "source": sample.source,
                "dataset_sha256": key["dataset_sha256"],
                "sample_sha256": sample.sha256,
                "subsample_size": plan.budget.size,
                "subsample_seed": key["subsample_seed"],
                "texts": len(sample),
                "clusters": len(set(sample.labels or [])),
            },
            "kmeans": {
                "seeds": list(config.kmeans_seeds),
                "batch_size": KMEANS_BATCH_SIZE,
                "n_init": "auto",
                "algorithm": "sklearn MiniBatchKMeans, as mteb ClusteringEvaluator",
            },
            "scores": scores,
            "timing": {**timing_shared, "score_seconds": round(score_seconds, 3)},
            "versions": versions,
            "git_commit": git["commit"],
            "git_dirty": git["dirty"],
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        write_json(path, cell)
        cells.append(cell)
    return cells


# --------------------------------------------------------------------------------------------
# Summary


def row_label(cell: dict[str, Any]) -> str:
    return f"{cell['variant']} | {cell['prompt']['name']} | {cell['pooling']} | L{cell['layer']}"


def summary_tables(cells: Sequence[dict[str, Any]]) -> tuple[Any, Any]:
    """(scores, stds) DataFrames: rows = variant x prompt x pooling x layer, columns = tasks + ``average``.

    The average is over the row's tasks; it is NaN when a row lacks a task the others have.
    """
    import pandas as pd

    records = [
        {
            "variant": c["variant"],
            "prompt": c["prompt"]["name"],
            "pooling": c["pooling"],
            "layer": str(c["layer"]),
            "task": c["task"]["name"],
            "v": c["scores"]["v_measure"],
            "std": c["scores"]["v_measure_std"],
        }
        for c in cells
    ]
    frame = pd.DataFrame.from_records(records)
    index = ["variant", "prompt", "pooling", "layer"]
    order = list(LOCAL_TASKS)
    tasks = sorted(dict.fromkeys(frame["task"]), key=lambda t: order.index(t) if t in order else len(order))
    rows = list(dict.fromkeys(map(tuple, frame[index].itertuples(index=False))))
    scores = frame.pivot_table(index=index, columns="task", values="v", aggfunc="first", sort=False)
    stds = frame.pivot_table(index=index, columns="task", values="std", aggfunc="first", sort=False)
    scores = scores.reindex(index=pd.MultiIndex.from_tuples(rows, names=index), columns=tasks)
    stds = stds.reindex(index=scores.index, columns=tasks)
    scores["average"] = scores[tasks].mean(axis=1, skipna=False)
    return scores, stds


def _markdown(scores: Any, stds: Any) -> str:
    tasks = [c for c in scores.columns if c != "average"]
    head = ["model", "prompt", "pooling", "layer", *tasks, "average"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in scores.index:
        values = []
        for task in tasks:
            v, s = scores.loc[row, task], stds.loc[row, task]
            values.append("" if math.isnan(v) else f"{v:.4f} ± {s:.4f}")
        avg = scores.loc[row, "average"]
        values.append("" if math.isnan(avg) else f"**{avg:.4f}**")
        lines.append("| " + " | ".join([*map(str, row), *values]) + " |")
    return "\n".join(lines) + "\n"


def write_summary(out: Path, cells: Sequence[dict[str, Any]]) -> dict[str, str]:
    """summary.md, summary.csv, summary.html (and summary.png where kaleido can render offline)."""
    from analysis.plots import clustering_heatmap, png_bytes
    from core.files import atomic_write

    scores, stds = summary_tables(cells)
    files: dict[str, str] = {}
    sizes = {c["task"]["name"]: (c["task"]["texts"], c["task"]["clusters"], c["max_length"]) for c in cells}
    seeds = sorted({tuple(c["kmeans"]["seeds"]) for c in cells})
    note = (
        "V-measure mean ± std over k-means seeds "
        + ", ".join(str(list(s)) for s in seeds)
        + "; tasks (texts, clusters, max_length): "
        + ", ".join(f"{t} ({n}, {k}, {m})" for t, (n, k, m) in sizes.items())
    )
    with atomic_write(out / "summary.md") as handle:
        handle.write(f"# Clustering grid\n\n{note}\n\n{_markdown(scores, stds)}")
    files["markdown"] = str(out / "summary.md")
    csv = scores.join(stds.add_suffix("_std")).reset_index()
    with atomic_write(out / "summary.csv") as handle:
        csv.to_csv(handle, index=False, float_format="%.6f")
    files["csv"] = str(out / "summary.csv")
    flat = scores.copy()
    flat.index = [" | ".join(map(str, row)) for row in scores.index]
    flat_std = stds.copy()
    flat_std.index = flat.index
    figure = clustering_heatmap(flat, flat_std, title="Clustering V-measure (mean over k-means seeds)")
    with atomic_write(out / "summary.html") as handle:
        handle.write(figure.to_html(include_plotlyjs=True, full_html=True))
    files["html"] = str(out / "summary.html")
    try:
        png = png_bytes(figure)
    except Exception as exc:  # kaleido needs a Chrome binary that an offline machine cannot download
        files["png_error"] = str(exc).strip().splitlines()[0]
    else:
        with atomic_write(out / "summary.png", "wb") as handle:
            handle.write(png)
        files["png"] = str(out / "summary.png")
    return files


# --------------------------------------------------------------------------------------------
# CLI


def _split(value: str | None) -> list[str] | None:
    return None if value is None else [item.strip() for item in value.split(",") if item.strip()]


def build_config(args: argparse.Namespace) -> GridConfig:
    preset = PRESETS[args.preset]
    prompts = _split(args.prompts) or ([] if args.prompts is not None else list(preset["prompts"]))
    if args.template:
        prompts = [*(prompts if args.prompts is not None else []), *args.template]
    seeds = tuple(int(s) for s in _split(args.kmeans_seeds) or []) if args.kmeans_seeds else DEFAULT_KMEANS_SEEDS
    return GridConfig(
        models=parse_model_specs(_split(args.models) if args.models is not None else preset["models"]),
        prompts=prompts,
        poolings=_split(args.poolings) if args.poolings is not None else list(preset["poolings"]),
        layers=_split(args.layers) if args.layers is not None else list(preset["layers"]),
        tasks=_split(args.tasks) if args.tasks is not None else list(preset["tasks"]),
        out=Path(args.out),
        kmeans_seeds=seeds,
        max_texts=args.max_texts,
        max_length=args.max_length,
        precision=args.precision,
        normalize=args.normalize,
        baseline=not args.no_baseline,
        cache=not args.no_cache,
        progress=not args.quiet,
    )


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m analysis.clustering",
        description="MTEB-style clustering grid: models/adapters x prompts x poolings x layers x tasks.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument(
        "--preset", choices=sorted(PRESETS), default="default", help="grid whose values fill any option not given"
    )
    parser.add_argument("--models", help="comma-separated: NAME, NAME+ADAPTER_DIR, or ADAPTER_DIR")
    parser.add_argument("--prompts", help="comma-separated prompt names (none, eol, cluster, summarize, ...)")
    parser.add_argument("--template", action="append", help="a custom prompt template with one {text} (repeatable)")
    parser.add_argument("--poolings", help="comma-separated: mean, last, eos, weighted, attention, text_mean")
    parser.add_argument("--layers", help="comma-separated layers: -1, 0, 12, last4 ...")
    parser.add_argument("--tasks", help="comma-separated: local, a local task, PATH[:TEXT[:LABEL]], or an mteb task")
    parser.add_argument("--out", required=True, help="output folder (cells/, summary.md/.csv/.html)")
    parser.add_argument("--kmeans-seeds", help=f"comma-separated k-means seeds (default {DEFAULT_KMEANS_SEEDS})")
    parser.add_argument("--max-texts", type=int, help="cap every task's sample at this many texts")
    parser.add_argument("--max-length", type=int, help="max tokens per text for every task (default: per task)")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    parser.add_argument("--normalize", action="store_true", help="L2-normalise vectors before k-means")
    parser.add_argument("--no-baseline", action="store_true", help="leave out the MiniLM baseline row")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        config = build_config(args)
        if config.max_texts is not None and config.max_texts < 2:
            raise GridError("--max-texts must be at least 2")
        result = run_grid(config)
    except (GridError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; completed cells are saved, rerun to resume", file=sys.stderr)
        return 2
    print(f"cells: {result.computed} computed, {result.skipped} already done; wall time {result.wall_seconds:.1f} s")
    for task, (texts, seconds, tokens) in result.throughput.items():
        print(f"  {task}: {texts / seconds:.1f} texts/s, {tokens / seconds:.0f} tokens/s ({texts:.0f} texts embedded)")
    if result.cells:
        scores, _ = summary_tables(result.cells)
        print(scores.round(4).to_string())
        for kind, path in result.files.items():
            if kind == "png_error":
                print(f"  (no PNG: {path}; the HTML figure has the same plot)")
            else:
                print(f"  {kind}: {path}")
    for error in result.errors:
        print(f"error: {error}", file=sys.stderr)
    return 2 if result.errors else 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
