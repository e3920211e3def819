"""The lens report: vocabulary lens, layer profile and geometry of fine-tuning for one model and adapter.

``run_report(LensConfig(...))`` writes into ``OUT/<adapter folder name>/``: ``report.json`` (every number, CIs),
``arrays.npz`` (per-text alignment per layer, the first principal components the lens removes), and figures
(HTML + PNG). Encodings are kept in ``.work/`` stage files until the report is written, so an interrupted run
resumes where it stopped. ``python -m analysis.lens`` is its CLI.
"""

from __future__ import annotations

import io
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from analysis.lens.corpus import LENS_VIEWS, lens_corpora, summarise_lens
from analysis.lens.inputs import Grid, encode_layers, grid_key, held_apart_pairs, layer_combos, load_stage, save_stage
from analysis.lens.profile import fine_tuning_geometry, layer_profile
from analysis.lens.vocabulary import content_token_ids, lens_head
from core.encoding.pooling import POOLING_MODES
from core.runtime.arguments import option
from core.runtime.errors import ConfigError
from core.runtime.files import atomic_write, write_json

__all__ = ["LensConfig", "build_encoder", "run_report"]

log = logging.getLogger(__name__)

DEFAULT_POOLINGS = ("last", "mean", "eos", "weighted", "text_mean")


@dataclass(frozen=True)
class LensConfig:
    """Settings of a lens report. Invariants: ``n >= 10``, ``top_k >= 1``, ``pairs >= 0``, known poolings."""

    adapter: str | None = option(None, help="adapter folder (its base model is loaded); none = base model alone")
    model: str | None = option(None, help="model name or folder (default: the adapter's base model)")
    tasks: tuple[str, ...] = option(
        ("trec-coarse",), help="labelled tasks (comma-separated): the first is the lens corpus; each gets a profile"
    )
    split: str = option("test", help="task split", choices=("test", "train"))
    n: int = option(500, help="texts sampled per task (seeded)")
    seed: int = option(0, help="sampling and bootstrap seed")
    top_k: int = option(10, help="tokens kept per vector; alignment counts content tokens within them")
    poolings: tuple[str, ...] = option(DEFAULT_POOLINGS, help="poolings profiled at every layer")
    pairs: int = option(200, help="held-apart positive pairs (Bible KJV/WEB verses) for alignment/uniformity")
    kmeans_seeds: int = option(3, help="k-means seeds per V-measure (42, 43, ...)")
    n_boot: int = option(1000, help="bootstrap resamples for the lens CIs")
    geometry_boot: int = option(200, help="bootstrap resamples for the geometry CIs (each recomputes an SVD)")
    attention: bool = option(True, help="relate alignment to the pooled token's attention shift (extra forwards)")
    attention_n: int = option(150, help="corpus texts (the first ones) whose attention is captured for the relation")
    examples: int = option(3, help="corpus texts whose top tokens per layer go into the report")
    prompt: str | None = option(None, help="prompt name or template (default: the adapter's trained prompt)")
    pooling: str | None = option(None, help="pooling the lens reads (default: the adapter's trained pooling)")
    out: str = option("results/lens", help="folder; the report goes into OUT/<adapter name>/")
    device: str = option("auto", help="auto, cpu, cuda, cuda:N or mps")
    figures: bool = option(True, help="write figures (HTML, and PNG where kaleido works)")

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", tuple(self.tasks))
        object.__setattr__(self, "poolings", tuple(self.poolings))
        if not self.tasks:
            raise ConfigError("Give at least one task with --tasks (e.g. trec-coarse).")
        if self.n < 10:
            raise ConfigError(f"--n {self.n} is too few texts for CIs; use at least 10.")
        if self.top_k < 1:
            raise ConfigError(f"--top-k {self.top_k} must be at least 1.")
        if self.pairs < 0 or self.pairs == 1:
            raise ConfigError(f"--pairs {self.pairs}: use 0 (no pairs) or at least 2.")
        if self.attention and self.attention_n < 10:
            raise ConfigError(f"--attention-n {self.attention_n}: use at least 10 texts, or --no-attention.")
        if self.kmeans_seeds < 1 or self.n_boot < 10 or self.geometry_boot < 10:
            raise ConfigError("--kmeans-seeds must be >= 1 and --n-boot / --geometry-boot >= 10.")
        unknown = [p for p in self.poolings if p not in POOLING_MODES or p == "attention"]
        if unknown or not self.poolings:
            choices = ", ".join(p for p in POOLING_MODES if p != "attention")
            raise ConfigError(f"Unknown or unsupported pooling(s) {unknown}; choose from: {choices}.")
        if self.adapter is None and self.model is None:
            raise ConfigError("Give --adapter ADAPTER (its base model is loaded) or --model MODEL.")

    @property
    def name(self) -> str:
        return Path(self.adapter).name if self.adapter else Path(str(self.model)).name


def build_encoder(config: LensConfig):
    """The model (with the adapter) and an fp32, cache-free encoder at the resolved embedding setting."""
    from core.encoding.encoder import Encoder
    from core.encoding.setting import EmbeddingSetting
    from core.models.adapters import read_adapter
    from core.models.registry import load_model

    metadata = read_adapter(config.adapter).metadata if config.adapter else None
    model = config.model or (metadata or {}).get("base_model")
    if model is None:
        raise ConfigError(f"{config.adapter} does not name its base model; give --model.")
    loaded = load_model(model, config.adapter, device=config.device)
    lens_head(loaded)  # an encoder model fails here, before any encoding
    setting = EmbeddingSetting.resolve(metadata, prompt=config.prompt, pooling=config.pooling)
    encoder = Encoder(
        loaded,
        method=setting.method,
        prompt=setting.prompt,
        pooling=setting.pooling,
        layer=str(setting.layer),
        max_length=setting.max_length,
        precision="fp32",
        cache=False,
    )
    return encoder, setting


def run_report(config: LensConfig) -> dict[str, Any]:
    """Compute and write the report; returns it. Resumes from ``OUT/NAME/.work`` stage files."""
    from core.data import resolve_dataset
    from core.data.sampling import sample_indices

    started = time.perf_counter()
    out = Path(config.out) / config.name
    work = out / ".work"
    encoder, setting = build_encoder(config)
    passes = encoder.token_passes.snapshot()  # tokens the decoder runs for this report
    loaded = encoder.loaded
    head = lens_head(loaded)
    variants = (False, True) if loaded.has_adapter else (False,)
    names = ["base", "adapter"][: len(variants)]
    states = loaded.num_layers + 1
    lens_pooling = setting.pooling
    poolings = tuple(dict.fromkeys((lens_pooling, *config.poolings)))
    setting_index = setting.layer.indices(states)
    if len(setting_index) != 1:
        raise ConfigError(f"The lens reads one layer; the setting pools {setting.layer} (several).")
    identity = {
        **loaded.identity(True),
        "setting": setting.to_dict(),
        "poolings": poolings,
        "variants": names,
        "device": str(encoder.device),
    }
    timings: dict[str, float] = {}
    report: dict[str, Any] = {
        "settings": {
            "model": loaded.name,
            "adapter": config.adapter,
            "adapter_sha256": loaded.adapter_hash,
            "weights_sha256": loaded.weights_hash,
            "embedding_setting": setting.to_dict(),
            "lens_pooling": lens_pooling,
            "tasks": list(config.tasks),
            "split": config.split,
            "n": config.n,
            "seed": config.seed,
            "top_k": config.top_k,
            "poolings": list(poolings),
            "kmeans_seeds": list(range(42, 42 + config.kmeans_seeds)),
            "n_boot": config.n_boot,
            "geometry_boot": config.geometry_boot,
            "device": str(encoder.device),
            "num_layers": loaded.num_layers,
            "vocab_size": head.vocab_size,
            "final_logit_softcapping": head.softcap,
        },
        "profiles": {},
    }
    pair_grid: Grid | None = None
    if config.pairs:
        pairs = held_apart_pairs(config.pairs, config.seed)
        pair_texts = [a for a, _ in pairs] + [b for _, b in pairs]
        key = grid_key(**identity, texts=pair_texts)
        pair_grid = load_stage(work / "pairs.npz", key)
        if pair_grid is None:
            tick = time.perf_counter()
            log.info("encoding %d held-apart pairs at every layer", len(pairs))
            pair_grid = encode_layers(encoder, pair_texts, layer_combos(poolings, states), variants)
            timings["pairs_encode"] = time.perf_counter() - tick
            save_stage(work / "pairs.npz", key, pair_grid)
        report["settings"]["pairs"] = {"n": len(pairs), "source": "bible KJV/WEB verses outside the training passages"}
    arrays: dict[str, np.ndarray] = {}
    for task_index, task in enumerate(config.tasks):
        dataset = resolve_dataset(task, config.split)
        index = sample_indices(len(dataset.texts), config.n, config.seed)
        texts = [dataset.texts[i] for i in index]
        labels = [dataset.labels[i] for i in index] if dataset.labels else None
        key = grid_key(**identity, texts=texts)
        stage = work / f"task-{task_index}.npz"
        grid = load_stage(stage, key)
        if grid is None:
            tick = time.perf_counter()
            log.info("%s: encoding %d texts at every layer, %s", task, len(texts), ", ".join(names))
            grid = encode_layers(encoder, texts, layer_combos(poolings, states), variants)
            timings[f"encode_{task}"] = time.perf_counter() - tick
            save_stage(stage, key, grid)
        tick = time.perf_counter()
        seeds = list(range(42, 42 + config.kmeans_seeds))
        profile = layer_profile(grid, labels, pair_grid, poolings, states, seeds)
        profile.update(task=task, dataset_sha256=dataset.sha256, n_texts=len(texts))
        report["profiles"][task] = profile
        timings[f"profile_{task}"] = time.perf_counter() - tick
        if task_index:
            continue
        tick = time.perf_counter()
        targets = content_token_ids(encoder.prepare(texts))
        by_variant = {name: {i: grid[name][(lens_pooling, i)] for i in range(states)} for name in names}
        lenses = lens_corpora(head, by_variant, loaded.num_layers, targets, top_k=config.top_k,
                              examples=config.examples)  # fmt: skip
        for name, variant_lens in lenses.items():
            for view in LENS_VIEWS:
                for measure, values in variant_lens.measures[view].items():
                    arrays[f"{name}/{view}/{measure}"] = values.astype(np.float32)
            arrays[f"{name}/components"] = variant_lens.components
        timings["lens"] = time.perf_counter() - tick
        decode = encoder.tokenizer.decode
        lens = summarise_lens(lenses, list(range(states)), lambda t, decode=decode: decode([t]), top_k=config.top_k,
                              n_boot=config.n_boot, seed=config.seed)  # fmt: skip
        lens["task"] = task
        lens["examples"] = _examples(texts, targets, lenses, decode, config.examples)
        report["lens"] = lens
        if len(names) == 2:
            tick = time.perf_counter()
            geometry_combo = (lens_pooling, setting_index[0])
            report["geometry"] = fine_tuning_geometry(
                grid, pair_grid, geometry_combo, states, n_boot=config.geometry_boot, seed=config.seed
            )
            timings["geometry"] = time.perf_counter() - tick
            if config.attention:
                from analysis.lens.relation import attention_relation

                tick = time.perf_counter()
                report["attention_relation"] = attention_relation(
                    encoder, texts[: config.attention_n], lenses, loaded.num_layers, n_boot=config.n_boot,
                    seed=config.seed,
                )  # fmt: skip
                timings["attention"] = time.perf_counter() - tick
    timings["total"] = time.perf_counter() - started
    report["timings_seconds"] = {k: round(v, 1) for k, v in timings.items()}
    report["token_passes"] = encoder.token_passes.since(passes)
    out.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    with atomic_write(out / "arrays.npz", "wb") as handle:
        handle.write(buffer.getvalue())
    if config.figures:
        from analysis.lens.figures import report_figures
        from analysis.plots import write_figures

        report["figures"] = write_figures(report_figures(report), out)
    write_json(out / "report.json", _finite(report))
    shutil.rmtree(work, ignore_errors=True)
    return report


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinity as None: report.json stays strict JSON (a constant vector set, such as
    the embeddings of one shared last token, has no CKA)."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def _examples(texts, targets, lenses, decode, count: int) -> list[dict[str, Any]]:
    """The first ``count`` texts: content tokens and top tokens per layer, per variant and view."""
    out = []
    for row in range(min(count, len(texts))):
        entry: dict[str, Any] = {"text": texts[row], "content_tokens": [decode([t]) for t in targets[row]]}
        for name, lens in lenses.items():
            entry[name] = {
                view: [
                    [[decode([int(t)]), round(float(p), 5)] for t, p in zip(ids, probs, strict=True)]
                    for ids, probs in zip(lens.example_ids[view][row], lens.example_probs[view][row], strict=True)
                ]
                for view in LENS_VIEWS
            }
        out.append(entry)
    return out
