"""The grid as asked for: model/adapter specs, task specs with their budgets, presets and the checked config.

Everything here fails with a GridError (naming the bad value and the valid choices) before any model loads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from analysis.clustering.sampling import check_clusterable
from core.data import LOCAL_TASKS, TRANSFER_TASKS, USER_FORMATS, DataError, Dataset, mteb_subsample, resolve_dataset
from core.encoding.setting import DEFAULT_PROMPT, EmbeddingSetting
from core.metrics import DEFAULT_KMEANS_SEEDS
from core.models.adapters import adapter_name, read_metadata
from core.runtime.errors import ConfigError, GridError

TaskKind = Literal["local", "transfer", "file", "mteb"]

SUBSAMPLE_SEED = 42
DEFAULT_MAX_LENGTH = 512
BASELINE_MODEL = "minilm"
BASELINE_POOLING = "mean"


@dataclass(frozen=True)
class TaskBudget:
    """How much of a task the grid embeds: an mteb-style sample of ``size`` texts (None: all), cut to ``max_length``."""

    size: int | None
    max_length: int


# Measured and explained in the package docstring.
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
        "prompts": ["none", DEFAULT_PROMPT, "cluster", "summarize"],
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
            return f"{Path(self.model.name).name}+{adapter_name(self.model.adapter)}"
        return Path(self.model.name).name


def parse_model_specs(items: Sequence[str]) -> list[ModelSpec]:
    """``NAME``, ``NAME+ADAPTER_DIR`` or ``ADAPTER_DIR`` (base model from its adapter settings)."""
    specs: list[ModelSpec] = []
    for raw in items:
        item = raw.strip()
        if not item:
            continue
        adapter: str | None = None
        if "+" in item:
            item, adapter = (part.strip() for part in item.split("+", 1))
        elif (Path(item) / "adapter_config.json").is_file():
            adapter, meta = item, read_metadata(item)
            if not meta.get("base_model"):
                raise GridError(f"adapter {item} does not name its base model; write it as MODEL+{item}")
            item = str(meta["base_model"])
        if adapter is not None and not (Path(adapter).expanduser() / "adapter_config.json").is_file():
            raise GridError(f"no adapter at {adapter} (no adapter_config.json)")
        specs.append(ModelSpec(item, adapter))
    if not specs:
        raise GridError("no models given")
    return list(dict.fromkeys(specs))


def variants(models: Sequence[ModelSpec], baseline: bool) -> list[Variant]:
    """The rows' sources: each model's base, its adapter where it has one, and the MiniLM baseline."""
    out: list[Variant] = []
    for spec in models:
        out.append(Variant(spec, False))
        if spec.adapter is not None:
            out.append(Variant(spec, True))
    if baseline and not any(v.model.name == BASELINE_MODEL and not v.use_adapter for v in out):
        out.append(Variant(ModelSpec(BASELINE_MODEL), False))
    return list(dict.fromkeys(out))


@dataclass
class TaskPlan:
    """A task as named on the command line; ``load`` gives its full labelled Dataset."""

    spec: str
    kind: TaskKind
    name: str
    budget: TaskBudget
    load: Callable[[], Dataset]


def expand_task_specs(items: Sequence[str]) -> list[str]:
    """``local`` becomes the six local tasks, ``transfer`` the transfer track's sets; duplicates and blanks go."""
    out: list[str] = []
    for raw in items:
        item = raw.strip()
        if item == "local":
            out.extend(LOCAL_TASKS)
        elif item == "transfer":
            out.extend(TRANSFER_TASKS)
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
    elif spec in TRANSFER_TASKS:  # already seeded samples of 1,000-2,000 short texts: embedded whole
        kind, budget = "transfer", TaskBudget(None, DEFAULT_MAX_LENGTH)
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
    from analysis.clustering.mteb_tasks import get_mteb_clustering_task, mteb_task_dataset  # imports mteb

    try:
        task = get_mteb_clustering_task(spec)
    except (KeyError, ValueError) as exc:
        raise GridError(
            f"unknown task {spec!r}: not a local or transfer task ({', '.join([*LOCAL_TASKS, *TRANSFER_TASKS])}), "
            "not a file "
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


def check_unique_task_names(plans: Sequence[TaskPlan]) -> None:
    """GridError if two tasks share a name: results, the printed scores and summary.csv are filed by task name,
    so one task's cells would replace the other's (``a/task.csv`` and ``b/task.csv`` are both ``task``)."""
    seen: dict[str, str] = {}
    for plan in plans:
        if plan.name in seen:
            raise GridError(
                f"tasks {seen[plan.name]} and {plan.spec} have the same name {plan.name!r} (results are filed by "
                "task name, so one would replace the other); rename one of the files."
            )
        seen[plan.name] = plan.spec


def prepare_out(out: Path) -> Path:
    """Create the grid's ``--out`` folder; one that is a file or lies under a file is a GridError naming it."""
    blocking = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        where = "is a file" if blocking == out else f"lies under {blocking}, which is a file"
        raise GridError(f"--out {out} {where}; name a folder (new or a grid's) instead.")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise GridError(f"cannot create --out {out}: {error.strerror or error}; choose a writable folder.") from None
    return out


def check_task_data(plan: TaskPlan, dataset: Dataset) -> Dataset:
    """The sample the grid embeds; GridError unless it has labels, >= 2 clusters and enough texts."""
    try:
        check_clusterable(dataset.name, dataset.labels, len(dataset))
        sample = mteb_subsample(dataset, plan.budget.size, SUBSAMPLE_SEED)
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
    device: str = "auto"  # auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps
    normalize: bool = False
    baseline: bool = True
    cache: bool = True
    progress: bool = True
    # Method specs (core.encoding.methods): plain uses the prompts above; echo, tp and ensembles bring their own
    # templates.
    methods: list[str] = field(default_factory=lambda: ["plain"])


def parse_methods(specs: Sequence[str]) -> list[Any]:
    """The grid's methods, parsed and deduplicated by spec; GridError naming the bad one."""
    from core.encoding.methods import parse_method

    methods = []
    for spec in specs:
        try:
            methods.append(parse_method(spec))
        except ConfigError as exc:
            raise GridError(f"--methods: {exc}") from None
    if not methods:
        raise GridError("--methods must name at least one method, e.g. plain,echo,tp,metaeol")
    return list({method.spec: method for method in methods}.values())


def group_settings(
    method: Any, prompt: str | None, combos: Sequence[tuple[str, str]], max_length: int
) -> list[EmbeddingSetting]:
    """One group's settings: ``method`` (resolved for the model) with ``prompt`` (a plain method's prompt as the
    user gave it; None for echo, tp and ensembles, which bring their own) at each (pooling, layer) of ``combos``."""
    try:
        return [
            EmbeddingSetting(method=method.spec, prompt=prompt, pooling=pooling, layer=layer, max_length=max_length)
            for pooling, layer in combos
        ]
    except ConfigError as exc:
        raise GridError(str(exc)) from None


def grid_settings(config: GridConfig, max_length: int = DEFAULT_MAX_LENGTH) -> list[EmbeddingSetting]:
    """The grid as a product of settings at one max length: plain with each prompt, each other method with its own
    template, times the poolings and layers (a TP range is resolved per model when it runs). GridError for a
    combination the setting type refuses."""
    from core.encoding.methods import Plain

    settings = []
    for method in parse_methods(config.methods):
        prompts = list(dict.fromkeys(config.prompts)) if isinstance(method, Plain) else [None]
        combos = [
            (pooling, layer) for pooling in dict.fromkeys(config.poolings) for layer in dict.fromkeys(config.layers)
        ]
        for prompt in prompts:
            settings += group_settings(method, prompt, combos, max_length)
    return settings


def validate_grid(config: GridConfig) -> None:
    """GridError for an unknown prompt, pooling, layer or method, no seeds, an empty axis or too small a sample."""
    from core.encoding.pooling import POOLING_MODES, LayerChoice
    from core.encoding.prompts import resolve_prompt

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
    parse_methods(config.methods)
    if not config.kmeans_seeds:
        raise GridError("at least one k-means seed is needed")
    if not (config.prompts and config.poolings and config.layers):
        raise GridError("prompts, poolings and layers must each name at least one value")
    if config.max_texts is not None and config.max_texts < 2:
        raise GridError("--max-texts must be at least 2")
    grid_settings(config, config.max_length or DEFAULT_MAX_LENGTH)  # every combination, through the one type
