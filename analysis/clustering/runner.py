"""Running the grid: one forward per (model, task, method, prompt) serves every pooling and layer, and a model's
base and adapter rows together (the layers below the adapter run once); each cell is scored and written as soon
as it is done, and a stored cell with the same key is skipped."""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from analysis.clustering.card import card_tracks, record_adapter_scores
from analysis.clustering.grid import (
    BASELINE_POOLING,
    GridConfig,
    ModelSpec,
    TaskPlan,
    Variant,
    check_task_data,
    check_unique_task_names,
    expand_task_specs,
    group_settings,
    parse_methods,
    plan_task,
    prepare_out,
    validate_grid,
    variants,
)
from analysis.clustering.provenance import git_state, package_versions
from analysis.clustering.store import cell_id, cell_key, cell_path, folder_cells, read_cell
from analysis.clustering.summary import write_summary
from analysis.clustering.uncertainty import text_uncertainty
from core.data import Dataset
from core.metrics import KMEANS_BATCH_SIZE, score_embeddings
from core.runtime.errors import ConfigError, GridError, TaskUnavailableError
from core.runtime.files import write_json


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

    def __init__(self, precision: str, cache: bool, device: Any = "cpu"):
        self.precision = precision
        self.device = device
        self.cache = cache
        self._loaded: dict[ModelSpec, Any] = {}
        self._encoders: dict[ModelSpec, Any] = {}
        self._configs: dict[ModelSpec, Any] = {}

    def identity(self, spec: ModelSpec, use_adapter: bool) -> dict[str, Any]:
        from core.models.adapters import adapter_hash
        from core.models.registry import resolve_model_path
        from core.models.weights import folder_weights_hash

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
        from core.models.registry import load_model

        if spec not in self._loaded:
            self._loaded, self._encoders = {}, {}  # one model in memory at a time
            self._loaded[spec] = load_model(spec.name, spec.adapter, device=self.device)
        return self._loaded[spec]

    def encoder(self, spec: ModelSpec, setting: Any) -> Any:
        """The model's encoder under ``setting``: one encoder per loaded model, viewed under each group's setting."""
        from core.encoding.encoder import Encoder
        from core.encoding.setting import EmbeddingSetting

        loaded = self.loaded(spec)
        if spec not in self._encoders:
            self._encoders[spec] = Encoder(
                loaded,
                setting=EmbeddingSetting(prompt="none", pooling="mean"),
                precision=self.precision,  # type: ignore[arg-type]
                cache=self.cache,
            )
        return self._encoders[spec].with_setting(setting)

    def _config(self, spec: ModelSpec) -> Any:
        from transformers import AutoConfig

        from core.models.registry import refuse_remote_code, remote_code_trusted, resolve_model_path

        if spec not in self._configs:
            path, trusted = resolve_model_path(spec.name), remote_code_trusted()
            refuse_remote_code(path, spec.name, trusted)  # never transformers' [y/N] prompt to run a folder's code
            self._configs[spec] = AutoConfig.from_pretrained(path, trust_remote_code=trusted)
        return self._configs[spec]

    def is_causal(self, spec: ModelSpec) -> bool:
        from core.models.registry import is_causal_config

        if spec in self._loaded:
            return bool(self._loaded[spec].is_causal)
        return is_causal_config(self._config(spec))

    def num_layers(self, spec: ModelSpec) -> int:
        """Decoder layers, from the config where the model is not loaded (a TP range resolves against it)."""
        if spec in self._loaded:
            return int(self._loaded[spec].num_layers)
        config = self._config(spec)
        layers = getattr(config, "num_hidden_layers", None) or config.get_text_config().num_hidden_layers
        return int(layers)

    def methods(self, spec: ModelSpec, methods: list[Any]) -> list[Any]:
        """The grid's methods resolved for this model (TP's default range); plain alone for a bidirectional
        encoder, which already sees the whole text."""
        from core.encoding.methods import PLAIN, check_method_for_model

        if not self.is_causal(spec):
            return [PLAIN]
        num_layers = self.num_layers(spec)
        return [check_method_for_model(method, num_layers, True) for method in methods]

    def facts(self, spec: ModelSpec, methods: list[Any], rows: list[Variant]) -> ModelFacts:
        """What the grid needs to know of a model, resolved once per run: causal or not, its methods and the
        identity (weights and adapter hashes) of each of its rows."""
        from core.models.registry import ModelNotFoundError

        try:
            causal = self.is_causal(spec)
            identities = {row.use_adapter: self.identity(spec, row.use_adapter) for row in rows}
        except (ModelNotFoundError, OSError, ValueError) as exc:
            raise GridError(str(exc).splitlines()[0]) from None
        try:
            resolved = tuple(self.methods(spec, methods))
        except ConfigError as exc:  # e.g. a TP layer range outside a model
            raise GridError(str(exc)) from None
        return ModelFacts(causal, resolved, identities)


@dataclass(frozen=True)
class ModelFacts:
    """A model's facts for the grid, resolved once: whether it is causal (a bidirectional encoder gets the text
    alone, mean-pooled), the grid's methods resolved for it, and each row's identity (``use_adapter`` -> hashes)."""

    causal: bool
    methods: tuple[Any, ...]
    identities: dict[bool, dict[str, Any]]


def run_grid(config: GridConfig) -> GridResult:
    """Score every missing cell of the grid, writing each cell's JSON as soon as it is scored.

    A group is one model's rows (base, and adapter where it has one) on one (task, method, prompt): the rows
    with missing cells share one forward (``Encoder.encode_grid``). Under ``torchrun --nproc_per_node=N``
    group ``i`` belongs to rank ``i % N``; every rank gets the merged result and rank 0 writes the summary. A cell
    does not depend on which process scored it (vectors do not depend on their batch), so the cells equal one
    process's.
    """
    from tqdm.auto import tqdm

    from analysis.clustering.mteb_results import MTEB_FOLDER
    from analysis.clustering.mteb_results import write_cell as write_mteb_result
    from core.encoding.pooling import LayerChoice
    from core.encoding.prompts import resolve_prompt
    from core.models.registry import ModelNotFoundError
    from core.runtime.device import resolve_device, resolve_precision
    from core.runtime.distributed import dist_info

    started = time.perf_counter()
    rank, world = dist_info()
    validate_grid(config)
    out = prepare_out(Path(config.out))
    plans = [plan_task(spec, config.max_texts, config.max_length) for spec in expand_task_specs(config.tasks)]
    check_unique_task_names(plans)
    row_sources = variants(config.models, config.baseline)
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)  # type: ignore[arg-type]
    layers = [str(LayerChoice.parse(layer)) for layer in config.layers]
    prompts = {p: resolve_prompt(p) for p in dict.fromkeys(config.prompts)}  # as the user wrote it -> template
    poolings = list(dict.fromkeys(config.poolings))
    models = _Models(precision, config.cache, device)
    result = GridResult()
    versions, git = package_versions(), git_state()

    rows_of = {
        spec: [v for v in row_sources if v.model == spec] for spec in dict.fromkeys(v.model for v in row_sources)
    }
    methods = parse_methods(config.methods)
    facts = {spec: models.facts(spec, methods, rows) for spec, rows in rows_of.items()}
    # A group is one forward's worth of cells: a model's rows on one task under one method and template.
    groups = [
        (spec, plan, method, prompt, template)
        for spec in rows_of
        for plan in plans
        for method in facts[spec].methods
        for prompt, template in _templates(method, prompts if facts[spec].causal else {"none": resolve_prompt("none")})
    ]
    bar = tqdm(total=len(groups), desc="clustering grid", unit="group", disable=not config.progress or rank != 0)
    samples: dict[str, Dataset | None] = {}
    for index, (spec, plan, method, prompt, template) in enumerate(groups):
        if index % world != rank:  # another process's group
            bar.update(1)
            continue
        model = facts[spec]
        if not model.causal:
            template = resolve_prompt("none")  # a bidirectional encoder gets the text alone, and its cell says so
        prompt_name = template.name if template is not None else method.spec
        bar.set_postfix_str(f"{spec.label} | {plan.name} | {method.spec} | {prompt_name}")
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
        combos = [(pool, layer) for pool in poolings for layer in layers]
        if not model.causal:
            combos = [(BASELINE_POOLING, "-1")]
        settings = group_settings(method, prompt, combos, plan.budget.max_length)
        todo: dict[Variant, list[tuple[Any, dict[str, Any], Path]]] = {}
        for variant in rows_of[spec]:
            for setting in settings:
                layer = str(setting.layer)
                key = cell_key(
                    model.identities[variant.use_adapter],
                    template.template if template is not None else None,
                    setting.pooling,
                    layer,
                    -1,
                    precision,
                    setting.max_length,
                    sample,
                    plan.budget,
                    config.kmeans_seeds,
                    config.normalize,
                    method.settings(),
                )
                path = cell_path(out, plan.name, variant.label, prompt_name, setting.pooling, layer, key)
                stored = read_cell(path, key)
                if stored is not None:
                    write_mteb_result(stored, out / MTEB_FOLDER, missing_only=True)  # e.g. cut off after the JSON
                    result.cells.append(stored)
                    result.skipped += 1
                else:
                    todo.setdefault(variant, []).append((setting, key, path))
        if todo:
            try:
                cells = _compute_group(
                    models, plan, sample, method, template, todo, config, precision, versions, git, out
                )
            except (ModelNotFoundError, FileNotFoundError, ValueError) as exc:
                # Bad model/adapter/layer for this model; cells scored so far are already on disk.
                labels = " and ".join(variant.label for variant in todo)
                raise GridError(f"{labels} on {plan.name}: {str(exc).splitlines()[0]}") from None
            result.cells.extend(cells)
            result.computed += len(cells)
            timing = cells[0]["timing"]
            if timing["forward_batches"]:  # texts and tokens embedded: a shared pair embeds each text twice
                stats = result.throughput[plan.name]
                stats[0] += timing["texts"] * len(timing["variants_sharing_forward"])
                stats[1] += timing["encode_seconds"]
                stats[2] += timing["tokens"] * len(timing["variants_sharing_forward"])
        bar.update(1)
    bar.close()
    if world > 1:
        result = _merged(result)
    result.wall_seconds = time.perf_counter() - started
    if result.cells and rank == 0:
        everything = folder_cells(out, result.cells)
        result.files = write_summary(out, everything)
        for track in card_tracks(config.tasks, config.max_texts, config.max_length):
            for spec in config.models:
                if spec.adapter is not None:
                    record_adapter_scores(spec, everything, out, track)
    return result


def _merged(result: GridResult) -> GridResult:
    """Every rank's cells, counts, errors and throughput, summed (all ranks get the same merged result)."""
    from core.runtime.distributed import all_gather

    parts = all_gather((result.cells, result.computed, result.skipped, result.errors, dict(result.throughput)))
    merged = GridResult()
    for cells, computed, skipped, errors, throughput in parts:
        merged.cells += cells
        merged.computed += computed
        merged.skipped += skipped
        merged.errors += [error for error in errors if error not in merged.errors]  # a task fails on every rank
        for task, stats in throughput.items():
            merged.throughput[task] = [a + b for a, b in zip(merged.throughput[task], stats, strict=True)]
    return merged


def _templates(method: Any, prompts: dict[str, Any]) -> list[tuple[str | None, Any]]:
    """A group's (prompt as given, template) pairs under ``method``: plain spans the grid's prompts; echo and tp
    bring their own template (no prompt given); an ensemble has several (None: the method holds them)."""
    from core.encoding.methods import Ensemble, Plain

    if isinstance(method, Plain):
        return list(prompts.items())
    return [(None, None)] if isinstance(method, Ensemble) else [(None, method.template())]


def _prompt_record(method: Any, template: Any) -> dict[str, Any]:
    if template is not None:
        return {"name": template.name, "template": template.template}
    return {"name": method.spec, "template": None, "templates": [t.template for t in method.templates()]}


def _compute_group(
    models: _Models,
    plan: TaskPlan,
    sample: Dataset,
    method: Any,
    template: Any,
    todo: dict[Variant, list[tuple[Any, dict[str, Any], Path]]],
    config: GridConfig,
    precision: str,
    versions: dict[str, str | None],
    git: dict[str, Any],
    out: Path,
) -> list[dict[str, Any]]:
    """One forward for every missing (pooling, layer) of one model's rows (``todo``: base and/or adapter) on this
    (task, method, prompt); one JSON per cell, and the cell as an mteb result in ``out``/mteb. Base and adapter
    together share the layers below the adapter.

    ``template`` is None for an ensemble (its prompts are in the method: one forward per prompt)."""
    from analysis.clustering.mteb_results import MTEB_FOLDER
    from analysis.clustering.mteb_results import write_cell as write_mteb_result

    spec = next(iter(todo)).model
    # The rows' missing settings differ only in pooling and layer: one forward serves them all.
    settings = list(dict.fromkeys(setting for entries in todo.values() for setting, _, _ in entries))
    encoder = models.encoder(spec, settings[0])
    if template is not None:
        prepared = encoder.prepare(sample.texts)
    else:  # an ensemble: every prompt's wrapped texts are a forward's tokens
        prepared = [
            item
            for each in method.templates()
            for item in encoder.with_setting(
                dataclasses.replace(encoder.setting, method="plain", prompt=each.template)
            ).prepare(sample.texts)
        ]
    tokens = sum(len(item.input_ids) for item in prepared)
    truncated = sum(item.truncated for item in prepared)
    passes = encoder.token_passes.snapshot()
    calls = [0]
    hook = encoder.loaded.backbone.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # truncation is recorded per cell instead
            begin = time.perf_counter()
            grids = encoder.encode_grid(
                sample.texts,
                [(setting.pooling, setting.layer) for setting in settings],
                variants=[variant.use_adapter for variant in todo],
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
        "token_passes": encoder.token_passes.since(passes),
        "from_cache": calls[0] == 0,
        "cells_sharing_forward": sum(len(entries) for entries in todo.values()),
        "variants_sharing_forward": [variant.label for variant in todo],
    }
    cells = []
    for variant, setting, key, path in ((v, *cell) for v, entries in todo.items() for cell in entries):
        pooling, layer = setting.pooling, str(setting.layer)
        vectors = grids[variant.use_adapter][(pooling, layer)]
        if config.normalize:
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        begin = time.perf_counter()
        assignments: list[Any] = []
        scores = score_embeddings(vectors, sample.labels or [], config.kmeans_seeds, assignments=assignments)
        uncertainty = text_uncertainty(vectors, sample.labels or [], config.kmeans_seeds, assignments=assignments)
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
            "method": method.spec,
            "prompt": _prompt_record(method, template),
            "pooling": pooling,
            "layer": layer,
            "precision": precision,
            "max_length": setting.max_length,
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
            "uncertainty": uncertainty,
            "timing": {**timing_shared, "score_seconds": round(score_seconds, 3)},
            "versions": versions,
            "git_commit": git["commit"],
            "git_dirty": git["dirty"],
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        write_json(path, cell)
        write_mteb_result(cell, out / MTEB_FOLDER)
        cells.append(cell)
    return cells
