"""Which explanation to trust: the faithfulness run and its ``report.json``, base and adapter.

For each sampled text, every chosen ranker (``rankers``) orders its content tokens; deletion and insertion
curves (``perturbation``) follow each order, AOPCs and their statistics (``statistics``) compare the methods.
Partner: each text's nearest neighbour (cosine) among the sampled texts of its task, per setting. A text with
fewer than K content tokens has a truncated curve (counted); a text without content tokens is skipped (counted).

``run_report(FaithfulnessConfig(...))`` writes ``report.json`` and figures; per-text results are appended
to ``records.jsonl`` under the config's hash (``records``), so a killed run resumes where it stopped.
``python -m analysis.faithfulness`` is the CLI.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from analysis import plots
from analysis.categories import sides
from analysis.faithfulness.config import MEASURES, METHODS, FaithfulnessConfig
from analysis.faithfulness.perturbation import ContentText, content_text, curves_for, pooled_vectors, variants
from analysis.faithfulness.rankers import Context, orders_for, score_chunk
from analysis.faithfulness.records import Measured, Pending, append_records, read_records, speed_from_records
from analysis.faithfulness.statistics import adapter_minus_base, aopc, ig_convergence, summarise
from core.data import resolve_dataset, sample_items
from core.encoding.capture import check_eager, resolve_layers
from core.encoding.encoder import Encoder
from core.models.registry import load_model
from core.runtime.errors import ConfigError
from core.runtime.files import write_json
from core.runtime.measure import peak_rss_mb

__all__ = [
    "RECORDS_FILE",
    "REPORT_FILE",
    "build_encoder",
    "checked_peak",
    "ig_subsample",
    "nearest_partners",
    "run_chunk",
    "run_report",
    "run_settings",
    "sample_texts",
    "text_curves",
]

log = logging.getLogger(__name__)

REPORT_FILE = "report.json"
RECORDS_FILE = "records.jsonl"


def checked_peak(encoder: Encoder, peak_layer: int | None) -> int:
    """``peak_layer`` checked against the model's depth; None: the last layer."""
    layers = len(resolve_layers(encoder.loaded.backbone, None))
    peak = peak_layer if peak_layer is not None else layers - 1
    if not -layers <= peak < layers:
        raise ConfigError(f"--peak-layer {peak} is out of range: use 0..{layers - 1}.")
    return peak


def build_encoder(config: FaithfulnessConfig) -> Encoder:
    """The encoder of ``config``'s model, adapter and embedding setting: eager attention, fp32, no cache."""
    loaded = load_model(config.model, config.adapter, device=config.device)
    check_eager(loaded.backbone)
    setting = config.embedding
    return Encoder(
        loaded,
        prompt=setting.prompt,
        pooling=setting.pooling,
        layer=str(setting.layer),
        cache=False,
        precision="fp32",
        max_length=setting.max_length,
        prefix_reuse=config.prefix_reuse,
    )


def run_report(
    config: FaithfulnessConfig,
    encoder: Encoder | None = None,
    sample: Sequence[tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """The whole report, written to ``config.out`` (``report.json``, figures; ``records.jsonl`` as it goes).

    Args:
        config: the run; its ``embedding`` is used as given (the CLI resolves it against the adapter).
        encoder: an encoder already built for the config (tests, pages); default: :func:`build_encoder`.
        sample: (key, text) pairs, keys ``task:index``, in place of the tasks' sample.

    Returns:
        The report as written to ``report.json``.
    """
    started, cpu_started = time.perf_counter(), time.process_time()
    encoder = encoder or build_encoder(config)
    passes = encoder.token_passes.snapshot()
    peak = checked_peak(encoder, config.peak_layer)
    out_dir = Path(config.out)
    pairs = list(sample) if sample is not None else sample_texts(config)
    prepared = [(key, content_text(encoder, text)) for key, text in pairs]
    kept = [(key, text) for key, text in prepared if text.positions]
    skipped = [key for key, text in prepared if not text.positions]
    if len(kept) < 2:
        raise ConfigError(f"Only {len(kept)} of {len(pairs)} texts have content tokens; give texts with content words.")
    ig_keys = ig_subsample([key for key, _ in kept], config.ig_texts)
    measured = run_settings(encoder, kept, config, peak, out_dir / RECORDS_FILE, ig_keys)
    runs = measured.records
    report: dict[str, Any] = {
        "settings": {
            **config.settings(),
            "prompt": encoder.prompt.template,
            "pooling": encoder.pooling,
            "peak_layer": peak,
            "config_hash": config.digest(),
            "removal": "content tokens cut from the text string, template re-wrapped, remaining text re-tokenized",
            "partner": "each text's nearest neighbour (cosine) among the sampled texts of its task, per setting",
        },
        "n_texts": len(kept),
        "n_skipped_no_content": len(skipped),
        "skipped": skipped,
        "n_truncated": sum(r["truncated"] for r in runs["base"]),
        "tasks": {
            task: sum(key.startswith(f"{task}:") for key, _ in kept) for task in {k.rsplit(":", 1)[0] for k, _ in kept}
        },
    }
    for label, records in runs.items():
        report[label] = summarise(records, config)
        ig = [r for r in records if "ig_relative_delta" in r]
        if ig:
            report[label]["integrated_gradients_convergence"] = ig_convergence(ig, config)
        report[label]["per_task"] = {
            task: summarise([r for r in records if r["task"] == task], config)["most_faithful"]
            for task in report["tasks"]
            if report["tasks"][task] >= 2
        }
    if "adapter" in runs:
        report["adapter_minus_base"] = {
            method: {
                measure: adapter_minus_base(runs, method, measure, config) for measure in ("deletion", "insertion")
            }
            for method in config.methods
        }
    report["speed"] = {"settings": list(runs), **speed_from_records(runs["base"]), "texts_measured": measured.computed}
    report["speed"]["peak_rss_mb"] = round(peak_rss_mb(), 1)
    report["speed"]["total_seconds"] = round(time.perf_counter() - started, 1)
    # CPU seconds of this process: on a shared machine a steadier unit than wall time.
    report["speed"]["total_cpu_seconds"] = round(time.process_time() - cpu_started, 1)
    report["speed"]["sample_encode_cpu_seconds"] = round(measured.sample_encode_cpu_seconds, 3)
    report["speed"]["total_in_sample_encodes_cpu"] = round(
        report["speed"]["total_cpu_seconds"] / max(measured.sample_encode_cpu_seconds, 1e-9), 1
    )
    report["speed"]["prefix_reuse"] = encoder.prefix_reuse
    report["speed"]["token_passes"] = encoder.token_passes.since(passes)
    report["speed"]["sample_token_passes"] = measured.sample_token_passes
    report["speed"]["sample_encode_seconds"] = round(measured.sample_encode_seconds, 3)
    report["speed"]["total_in_sample_encodes"] = round(
        report["speed"]["total_seconds"] / max(measured.sample_encode_seconds, 1e-9), 1
    )
    report["figures"] = plots.write_figures(plots.faithfulness_figures(report), out_dir, png=config.png)
    write_json(out_dir / REPORT_FILE, report)
    return report


def run_chunk(
    encoder: Encoder,
    chunk: Sequence[Pending],
    settings: dict[str, bool],
    config: FaithfulnessConfig,
    peak: int,
    ig_keys: set[str] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Score, perturb and measure a chunk of texts in every setting (label -> ``use_adapter``); integrated
    gradients only for the keys in ``ig_keys`` (None: every text).

    Each setting ranks with its own scores; the perturbed texts of every method and setting are encoded in one
    batched pass that gives every setting's vector (a text two orders share is encoded once).
    """
    texts = [item.text for item in chunk]
    with_ig = [ig_keys is None or item.key in ig_keys for item in chunk]
    spent: dict[str, float] = {}
    orders: dict[str, list[dict[str, list[list[int]]]]] = {}
    extras: dict[str, dict[int, dict[str, Any]]] = {}
    for label, use_adapter in settings.items():
        context = Context(encoder, use_adapter, config, peak)
        scores, extras[label] = score_chunk(context, texts, with_ig, spent)
        orders[label] = [orders_for(item.text, item.key, s, config) for item, s in zip(chunk, scores, strict=True)]
    # Per text: variant -> label -> vector; the text itself (insertion's last step when it has at most K content
    # tokens) is already encoded.
    vectors: list[dict[str, dict[str, np.ndarray]]] = [{item.text.text: dict(item.original)} for item in chunk]
    # Every method's perturbed texts of the chunk run together, against the originals run once as references, so
    # each token prefix they share with their original or with each other runs once (``pooled_vectors``). The time
    # is split among the methods in proportion to the perturbed texts each added first (in the config's order).
    started = time.perf_counter()
    todo: list[tuple[int, str]] = []
    added: dict[str, int] = {}
    for method in config.methods:
        before = len(todo)
        for index, text in enumerate(texts):
            k = min(config.k, len(text.positions))
            for label in settings:
                for order in orders[label][index].get(method, []):
                    deletion, insertion = variants(text, order, k)
                    todo += [(index, t) for t in (*deletion, *insertion) if t not in vectors[index]]
        todo = list(dict.fromkeys(todo))
        added[method] = len(todo) - before
    if todo:
        references = (
            encoder.references([item.text.item for item in chunk], encoder.plan(), list(settings.values()))
            if encoder.prefix_reuse
            else None
        )
        of = (references, [index for index, _ in todo]) if references is not None else None
        encoded = pooled_vectors(encoder, [t for _, t in todo], list(settings.values()), of)
        for row, (index, variant) in enumerate(todo):
            vectors[index][variant] = {label: encoded[flag][row] for label, flag in settings.items()}
    perturbing = time.perf_counter() - started
    for method in config.methods:
        share = added[method] / len(todo) if todo else 1 / len(config.methods)
        spent[method] = spent.get(method, 0.0) + perturbing * share
    # Each text's share of the chunk's time per method, all settings together (integrated gradients' over the
    # texts it ran on), so the report's speed covers every text even when a run was resumed.
    ran_on = {method: sum(method in orders["base"][index] for index in range(len(chunk))) for method in spent}
    records: dict[str, list[dict[str, Any]]] = {label: [] for label in settings}
    for label in settings:
        for index, item in enumerate(chunk):
            text = item.text
            k = min(config.k, len(text.positions))
            own = {variant: by_label[label] for variant, by_label in vectors[index].items()}
            methods: dict[str, Any] = {}
            for method, method_orders in orders[label][index].items():
                draws = [curves_for(o, text, k, own, item.original[label], item.partner[label]) for o in method_orders]
                curves = {m: np.mean([d[m] for d in draws], axis=0).round(6).tolist() for m in MEASURES}
                entry: dict[str, Any] = {"curves": curves, "order": [text.tokens[i] for i in method_orders[0]]}
                for measure in MEASURES:
                    kind = "deletion" if measure.endswith("deletion") else "insertion"
                    entry[f"aopc_{measure}"] = round(float(np.mean([aopc(d[measure], kind) for d in draws])), 6)
                if method == "random":
                    entry["aopc_deletion_draws"] = [round(aopc(d["deletion"], "deletion"), 6) for d in draws]
                methods[method] = entry
            record = {
                "config": config.digest(),
                "key": item.key,
                "side": label,
                "task": item.key.rsplit(":", 1)[0],
                "text": text.text,
                "n_content": len(text.positions),
                "k": k,
                "truncated": k < config.k,
                "methods": methods,
                "seconds": {m: round(spent[m] / ran_on[m], 4) for m in methods if ran_on.get(m)},
            }
            for name, value in extras[label].get(index, {}).items():
                record[name] = round(value, 6) if isinstance(value, float) else value
            records[label].append(record)
    return records


def sample_texts(config: FaithfulnessConfig) -> list[tuple[str, str]]:
    """(key, text) of the sampled texts of every task; the key is ``task:index`` in the task's test split."""
    out = []
    for task in config.tasks:
        texts = resolve_dataset(task, "test").texts
        indices = sample_items(list(range(len(texts))), config.n, config.seed)
        out += [(f"{task}:{i}", texts[i]) for i in indices]
    return out


def ig_subsample(keys: Sequence[str], per_task: int) -> set[str] | None:
    """The first ``per_task`` keys of each task (``task:index``) in sample order; None (every text) for 0."""
    if per_task == 0:
        return None
    taken: dict[str, int] = {}
    chosen = set()
    for key in keys:
        task = key.rsplit(":", 1)[0]
        if taken.get(task, 0) < per_task:
            taken[task] = taken.get(task, 0) + 1
            chosen.add(key)
    return chosen


def nearest_partners(keys: Sequence[str], vectors: np.ndarray) -> list[int]:
    """Each text's nearest neighbour (cosine) among the texts of its own task."""
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    tasks = np.array([key.rsplit(":", 1)[0] for key in keys])
    similarity = unit @ unit.T
    similarity[tasks[:, None] != tasks[None, :]] = -np.inf
    np.fill_diagonal(similarity, -np.inf)
    return [int(i) for i in similarity.argmax(1)]


def run_settings(
    encoder: Encoder,
    sample: Sequence[tuple[str, ContentText]],
    config: FaithfulnessConfig,
    peak: int,
    records_path: Path,
    ig_keys: set[str] | None = None,
) -> Measured:
    """All texts in every setting (base, and adapter when one is attached), resuming from ``records_path``;
    appends each finished chunk. A text is measured again unless every setting has its record."""
    settings = sides(encoder.loaded.has_adapter)
    done = read_records(records_path, config.digest())
    started, cpu, passes = time.perf_counter(), time.process_time(), encoder.token_passes.snapshot()
    originals = pooled_vectors(encoder, [text.text for _, text in sample], list(settings.values()))
    measured = Measured(
        {label: [] for label in settings},
        sample_encode_seconds=time.perf_counter() - started,
        sample_encode_cpu_seconds=time.process_time() - cpu,
        sample_token_passes=encoder.token_passes.since(passes),
    )
    partners = {
        label: nearest_partners([key for key, _ in sample], originals[flag]) for label, flag in settings.items()
    }
    pending = []
    for index, (key, text) in enumerate(sample):
        earlier = {label: done.get((key, label)) for label in settings}
        if all(r is not None and r["text"] == text.text for r in earlier.values()):  # an edited file: afresh
            for label, record in earlier.items():
                measured.records[label].append(record)
        else:
            pending.append(
                Pending(
                    key,
                    text,
                    {label: originals[flag][index] for label, flag in settings.items()},
                    {label: originals[flag][partners[label][index]] for label, flag in settings.items()},
                )
            )
    if len(pending) < len(sample):
        log.info("%d of %d texts already measured in %s, resuming", len(sample) - len(pending), len(sample),
                 records_path)  # fmt: skip
    for start in range(0, len(pending), config.chunk):
        chunk = pending[start : start + config.chunk]
        records = run_chunk(encoder, chunk, settings, config, peak, ig_keys)
        append_records(records_path, [r for label in settings for r in records[label]])
        for label in settings:
            measured.records[label] += records[label]
        measured.computed += len(chunk)
        fresh = measured.records["base"][-measured.computed :]  # this process's: the progress lines sum their timings
        ig = [r for label in settings for r in records[label] if "ig_steps" in r]
        log.info(
            "%d/%d texts measured (%s); seconds so far per method (ranking + perturbation): %s%s",
            measured.computed,
            len(pending),
            " and ".join(settings),
            ", ".join(f"{m} {v:.0f}" for m, v in speed_from_records(fresh)["seconds_per_method"].items()),
            f"; this chunk's IG steps mean {np.mean([r['ig_steps'] for r in ig]):.0f}, relative error max "
            f"{max(r['ig_relative_delta'] for r in ig):.3f}"
            if ig
            else "",
        )
    return measured


def text_curves(
    encoder: Encoder,
    text: str,
    partner: str,
    k: int = FaithfulnessConfig.k,
    methods: Sequence[str] = METHODS,
    random_seeds: int = FaithfulnessConfig.random_seeds,
    peak_layer: int | None = None,
) -> dict[str, dict[str, Any]]:
    """One text's per-method curves and AOPCs (its record), per setting; ``partner`` is the pair's other text.

    ``peak_layer``: the layer ``attention_peak`` reads (None: the last; see :func:`.config.peak_layer_from_report`).
    """
    config = FaithfulnessConfig(
        model=encoder.loaded.name, k=k, methods=tuple(methods), random_seeds=random_seeds, peak_layer=peak_layer
    )
    content = content_text(encoder, text)
    if not content.positions:
        raise ConfigError(f"{text[:40]!r} has no content tokens (only stopwords or punctuation); nothing to rank.")
    peak = checked_peak(encoder, peak_layer)
    settings = sides(encoder.loaded.has_adapter)
    vectors = pooled_vectors(encoder, [content.text, partner], list(settings.values()))
    pending = Pending(
        "text:0",
        content,
        {label: vectors[flag][0] for label, flag in settings.items()},
        {label: vectors[flag][1] for label, flag in settings.items()},
    )
    return {label: records[0] for label, records in run_chunk(encoder, [pending], settings, config, peak).items()}
