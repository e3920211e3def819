"""Which explanation to trust: deletion and insertion faithfulness of attention and attribution, base and adapter.

Each explanation method ranks a text's content tokens (``core.encoding.roles`` CONTENT: the text's non-stopword,
non-punctuation tokens; prompt, stopwords and punctuation are never ranked). Deletion removes them in that
order, k = 1..K; insertion starts from the text with every content token removed and puts them back in
order. After each step the pooled vector is compared with the original: ``1 - cosine``, and the change of
the text's cosine to a partner (its nearest neighbour in the sample, by the same setting's vectors).

Removal, not masking: a token is removed by cutting its character span out of the text string, and the
shortened text is wrapped in the template again, so the prompt stays intact and the pooled (last) token
is still the template's last token. Masking (a pad or mask token in place) would feed the model an input
it never sees (SmolLM2 has no mask token, its pad is EOS), and attention-masking a position changes what
the pooled token can read without a text that produced it. The remaining text is tokenized afresh, so
neighbouring pieces may merge into different tokens; the curves measure what the model does with the
shortened text, which is what a user would feed it.

AOPC (area over the perturbation curve, Samek et al. 2017): deletion, the mean over k = 1..K of the
distance from the original (higher: the ranking finds the tokens that matter first); insertion, the mean
over k of how far the distance fell from the all-removed start (higher: putting the top tokens back
restores the vector faster). A text with fewer than K content tokens has a truncated curve (its AOPC
averages the steps it has; counted); a text without content tokens is skipped (counted).

``run_report(FaithfulnessConfig(...))`` writes ``report.json`` and figures; per-text results are appended
to ``records.jsonl`` under the config's hash, so a killed run resumes where it stopped.
``python -m analysis.faithfulness`` is the CLI.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
from jaxtyping import Float

from analysis import plots
from analysis.attention import capture_corpus, query_token_for
from analysis.attribution.integrated_gradients import Attributor, frozen
from analysis.categories import query_index, sides
from analysis.stats import paired_stats
from core.data import resolve_dataset, sample_items
from core.encoding.capture import check_eager, resolve_layers
from core.encoding.encoder import Encoder, PreparedText
from core.encoding.roles import Role
from core.models.registry import DEFAULT_MODEL, load_model
from core.runtime.device import DEVICE_HELP
from core.runtime.errors import ConfigError, run_cli
from core.runtime.files import disk_full, write_json
from core.runtime.measure import peak_rss_mb
from core.runtime.paths import REPO_ROOT

log = logging.getLogger(__name__)

Method = Literal["attention_last", "attention_peak", "rollout", "integrated_gradients", "gradient_x_input", "random"]
METHODS: tuple[str, ...] = get_args(Method)
Measure = Literal["deletion", "insertion", "sim_deletion", "sim_insertion"]
MEASURES: tuple[str, ...] = get_args(Measure)
REPORT_FILE = "report.json"
RECORDS_FILE = "records.jsonl"
ATTENTION_REPORT = REPO_ROOT / "results" / "attention" / "attention_report.json"
# Where the shipped adapter's content-attention shift peaks (results/attention, 500 trec-fine texts).
SMOLLM2_PEAK_LAYER = 24


@dataclass(frozen=True)
class FaithfulnessConfig:
    """Everything a faithfulness run depends on; the CLI options map one to one onto these fields."""

    model: str = DEFAULT_MODEL
    adapter: str | None = None  # LoRA adapter folder; without it base only
    prompt: str | None = None  # default: the adapter's, else eol
    pooling: str | None = None  # default: the adapter's, else last
    # Local or transfer tasks, or files (resolve_dataset). Not emoji-names: its names have 1-2 content tokens,
    # where every ranking removes the same tokens and all methods tie.
    tasks: tuple[str, ...] = ("trec-fine", "wordnet-glosses")
    n: int = 300  # texts sampled per task
    seed: int = 0
    # Content tokens removed / inserted at most. 5: on the 600 texts of the K = 8 report, AOPC over the first 5
    # steps ranked the methods alike, each margin as clearly separated, at 0.76x the perturbed tokens.
    k: int = 5
    methods: tuple[str, ...] = METHODS
    # Orders of the random floor per text. One: between three draws over 600 texts the floor's mean moved by sd
    # 0.001 (base) / 0.003 (adapter); more draws narrow the paired CIs against it a little, at ~100 s each here.
    random_seeds: int = 1
    peak_layer: int | None = None  # default: the attention report's peak, else 24 for SmolLM2, else the last
    ig_steps: int = 8  # integrated-gradients steps of the first (whole-path) Gauss-Legendre segment
    ig_max_steps: int = 128  # per text, where segments above the tolerance are halved
    ig_tolerance: float = 0.05  # completeness error allowed, relative to f(text) - f(baseline)
    # Integrated gradients on the first N sampled texts of each task (0: all). Converged IG takes ~80 forward and
    # backward passes per text, ~40x the time of any other method; the others run on every text.
    ig_texts: int = 10
    max_length: int = 128
    chunk: int = 32  # texts scored and perturbed per batch (and per resume checkpoint)
    bootstrap: int = 2000
    out: str = "results/faithfulness"
    png: bool = True  # PNG beside the HTML figures (needs chromium; HTML is always written)
    device: str = "auto"  # auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps; not part of the digest

    def check(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ConfigError(f"Unknown method(s) {', '.join(unknown)}; choose from: {', '.join(METHODS)}.")
        if not self.methods:
            raise ConfigError(f"No method given; choose from: {', '.join(METHODS)}.")
        if self.k <= 0:
            raise ConfigError(f"K must be at least 1 (content tokens removed per curve), got {self.k}.")
        if self.n < 2:
            raise ConfigError(f"--n must be at least 2 texts per task for the statistics, got {self.n}.")
        if self.random_seeds < 1:
            raise ConfigError(f"--random-seeds must be at least 1, got {self.random_seeds}.")
        if self.chunk < 1 or self.ig_steps < 2 or self.ig_max_steps < self.ig_steps or self.ig_tolerance <= 0:
            raise ConfigError("--chunk must be >= 1, 2 <= --ig-steps <= --ig-max-steps and --ig-tolerance > 0.")
        if self.ig_texts < 0:
            raise ConfigError(f"--ig-texts must be >= 0 (0: every text), got {self.ig_texts}.")

    def digest(self) -> str:
        """Hash of everything that changes a per-text result (not where it is written, nor the batching)."""
        values = {k: v for k, v in asdict(self).items() if k not in ("out", "chunk", "bootstrap", "png", "device")}
        return hashlib.sha256(json.dumps(values, sort_keys=True, default=list).encode()).hexdigest()[:16]


# ----- texts and their content tokens


@dataclass(frozen=True)
class ContentText:
    """A text (as the encoder keeps it, cut to max_length) with its content tokens' positions and spans."""

    text: str
    item: PreparedText
    positions: tuple[int, ...]  # token indices in ``item.input_ids``
    spans: tuple[tuple[int, int], ...]  # character spans in ``text``
    tokens: tuple[str, ...]

    def without(self, removed: Sequence[int]) -> str:
        """The text with the content tokens ``removed`` (indices into ``positions``) cut out."""
        cut = sorted((self.spans[i] for i in removed), reverse=True)
        text = self.text
        for start, end in cut:
            text = text[:start] + text[end:]
        return text


def content_text(encoder: Encoder, text: str) -> ContentText:
    """Locate the content tokens of ``text`` in the encoder's own tokenization of the wrapped text."""
    item = encoder.prepare([text])[0]
    prefix, suffix = encoder.prompt.prefix, encoder.prompt.suffix
    kept = item.wrapped[len(prefix) : len(item.wrapped) - len(suffix)]  # the text, cut where it was truncated
    offsets = encoder.tokenizer(item.wrapped, return_offsets_mapping=True, add_special_tokens=True)["offset_mapping"]
    positions, spans, tokens = [], [], []
    for position, role in enumerate(item.roles):
        if role != Role.CONTENT:
            continue
        start, end = offsets[position]
        # A token glued across the text's edge (a quote and the first word) keeps only its text part.
        span = (max(start - len(prefix), 0), min(end - len(prefix), len(kept)))
        positions.append(position)
        spans.append(span)
        tokens.append(kept[span[0] : span[1]])
    return ContentText(kept, item, tuple(positions), tuple(spans), tuple(tokens))


def pooled_vectors(
    encoder: Encoder, texts: Sequence[str], settings: Sequence[bool]
) -> dict[bool, Float[np.ndarray, "texts hidden"]]:
    """Pooled vectors of (possibly empty) texts in the encoder's template, per setting (``use_adapter``).

    Base and adapter together run the layers below the adapter once (``Encoder.forward_pair``): a perturbed
    text is encoded once for both. Perturbed texts may lose every character: the template wrapped around
    nothing is a valid input (the prompt alone), so empty texts are allowed.
    """
    items = encoder.prepare(texts, allow_empty=True)
    plan = encoder.plan()
    out = {flag: np.zeros((len(items), encoder.dim), dtype=np.float64) for flag in dict.fromkeys(settings)}
    with torch.inference_mode():
        for group in encoder.batches(items):
            states = encoder.forward_variants(encoder.collate([items[i] for i in group]), plan, settings)
            for flag, flag_states in states.items():
                out[flag][group] = plan.poolings[0](flag_states).double().cpu().numpy()
    return out


# ----- importance scores


def default_peak_layer(model: str, layers: int) -> int:
    """The attention report's peak-shift layer when it is this model's, else 24 for SmolLM2, else the last."""
    if ATTENTION_REPORT.is_file():
        report = json.loads(ATTENTION_REPORT.read_text())
        top = ((report.get("shift") or {}).get("top_layers") or [{}])[0].get("layer")
        if report.get("settings", {}).get("model") == model and top is not None and top < layers:
            return int(top)
    if model == DEFAULT_MODEL and layers > SMOLLM2_PEAK_LAYER:
        return SMOLLM2_PEAK_LAYER
    return layers - 1


def rollout(maps: Float[np.ndarray, "layers heads keys keys"], query: int) -> Float[np.ndarray, " keys"]:
    """Attention rollout (Abnar & Zuidema 2020) of the query row: heads averaged, residual as 0.5 identity."""
    row = np.zeros(maps.shape[-1])
    row[query] = 1.0
    identity = np.eye(maps.shape[-1])
    for layer in range(maps.shape[0] - 1, -1, -1):
        mixed = 0.5 * maps[layer].mean(0).astype(np.float64) + 0.5 * identity
        row = row @ (mixed / mixed.sum(-1, keepdims=True))
    return row


def attention_scores(
    encoder: Encoder, texts: Sequence[ContentText], use_adapter: bool, methods: Sequence[str], peak: int
) -> dict[str, list[np.ndarray]]:
    """Per-token scores of the attention methods from one capture (full maps only where rollout needs them)."""
    wanted = [m for m in methods if m in ("attention_last", "attention_peak", "rollout")]
    if not wanted:
        return {}
    mode = "full" if "rollout" in wanted else "rows"
    token = query_token_for(encoder.pooling)
    captured = capture_corpus(
        encoder, [t.text for t in texts], use_adapter=use_adapter, mode=mode, token=token, keep_maps=mode == "full"
    )
    out: dict[str, list[np.ndarray]] = {m: [] for m in wanted}
    for text, item in zip(texts, captured.items, strict=True):
        if "attention_last" in out:
            out["attention_last"].append(item.weights(-1))
        if "attention_peak" in out:
            out["attention_peak"].append(item.weights(peak))
        if "rollout" in out:
            out["rollout"].append(rollout(item.maps, query_index(text.item, token)))
    return out


def gradient_x_input_scores(encoder: Encoder, texts: Sequence[ContentText], use_adapter: bool) -> list[np.ndarray]:
    """Gradient x input of the pooled vector's norm (its projection on its own direction), summed over hidden."""
    items = [t.item for t in texts]
    plan = encoder.plan()
    table = encoder.loaded.backbone.get_input_embeddings()
    scores: list[np.ndarray | None] = [None] * len(items)
    with encoder.loaded.adapter_enabled(use_adapter), frozen(encoder.loaded.model), torch.enable_grad():
        for group in encoder.batches(items):
            batch = encoder.to_device(encoder.collate([items[i] for i in group]))
            embeds = table(batch["input_ids"]).detach().requires_grad_(True)
            pooled = plan.poolings[0](encoder.forward(batch, plan, inputs_embeds=embeds))
            direction = (pooled / pooled.norm(dim=-1, keepdim=True).clamp_min(1e-12)).detach()
            (pooled * direction).sum().backward()
            per_token = (embeds.grad * embeds).sum(-1).detach().double().cpu().numpy()
            for row, index in enumerate(group):
                start = int(batch["start"][row])
                scores[index] = per_token[row, start : start + len(items[index].input_ids)]
    return [s for s in scores if s is not None]


def integrated_gradients_scores(
    encoder: Encoder, texts: Sequence[ContentText], use_adapter: bool, config: FaithfulnessConfig
) -> tuple[list[np.ndarray], list[float], list[int]]:
    """``Attributor.token_shares_many`` (pad baseline): scores, relative completeness deltas, steps per text.

    Adaptive: ``ig_steps`` Gauss-Legendre steps over the whole path first; a segment whose completeness gap
    exceeds its share of ``ig_tolerance`` is halved (twice the steps there), up to ``ig_max_steps`` per text.
    """
    attributor = Attributor(
        encoder,
        token=query_token_for(encoder.pooling),
        n_steps=config.ig_steps,
        max_steps=config.ig_max_steps,
        tolerance=config.ig_tolerance,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the deltas are reported (distribution, count above tolerance), not warned
        attributions = attributor.token_shares_many([text.text for text in texts], use_adapter)
    scores = [np.asarray(a.scores, dtype=np.float64) for a in attributions]
    return scores, [a.relative_delta for a in attributions], [a.steps for a in attributions]


def random_order(n: int, seed: int, key: str, draw: int) -> list[int]:
    """A seeded permutation of ``n`` content tokens, fixed by the run's seed, the text's key and the draw."""
    entropy = int.from_bytes(hashlib.sha256(f"{seed}:{key}:{draw}".encode()).digest()[:8], "little")
    return [int(i) for i in np.random.default_rng(entropy).permutation(n)]


def ranked(scores: np.ndarray, text: ContentText) -> list[int]:
    """Content tokens (indices into ``text.positions``) by |score|, largest first; ties keep text order."""
    values = np.abs(np.asarray([scores[p] for p in text.positions]))
    return [int(i) for i in np.argsort(-values, kind="stable")]


# ----- curves


def aopc(curve: Sequence[float], kind: Literal["deletion", "insertion"]) -> float:
    """Area over the perturbation curve of ``curve`` = [value at k=0, k=1, ...], averaged over k >= 1.

    Deletion: the mean distance from the original after each removal (``curve[0]`` is the original, 0).
    Insertion: the mean fall of the distance from the all-removed start ``curve[0]``.
    """
    values = np.asarray(curve, dtype=np.float64)
    if len(values) < 2:
        raise ConfigError("A perturbation curve needs the start and at least one step.")
    steps = values[1:]
    return float((steps - values[0]).mean() if kind == "deletion" else (values[0] - steps).mean())


def orders_for(
    text: ContentText, key: str, scores: dict[str, np.ndarray], methods: Sequence[str], config: FaithfulnessConfig
) -> dict[str, list[list[int]]]:
    """Each method's order(s) of the content tokens (several for ``random``); a method without scores for this
    text (integrated gradients beyond ``ig_texts``) has none."""
    m = len(text.positions)
    orders = {name: [ranked(values, text)] for name, values in scores.items()}
    if "random" in methods:
        orders["random"] = [random_order(m, config.seed, key, draw) for draw in range(config.random_seeds)]
    return {name: orders[name] for name in methods if name in orders}


def variants(text: ContentText, order: Sequence[int], k: int) -> tuple[list[str], list[str]]:
    """Deletion texts (top 1..k removed) and insertion texts (all removed, then top 0..k back)."""
    deletion = [text.without(order[:step]) for step in range(1, k + 1)]
    insertion = [text.without(order[step:]) for step in range(0, k + 1)]
    return deletion, insertion


def curves_for(
    order: Sequence[int],
    text: ContentText,
    k: int,
    vectors: dict[str, np.ndarray],
    original: np.ndarray,
    partner: np.ndarray,
) -> dict[str, list[float]]:
    """Distance and similarity-change curves of one order; ``vectors`` maps each variant text to its vector."""
    deletion, insertion = variants(text, order, k)

    def cosine(a: np.ndarray, b: np.ndarray) -> float:
        return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))

    base_sim = cosine(original, partner)

    def distance(v: np.ndarray) -> float:
        return 1.0 - cosine(v, original)

    def sim_change(v: np.ndarray) -> float:
        return abs(cosine(v, partner) - base_sim)

    return {
        "deletion": [0.0] + [distance(vectors[t]) for t in deletion],
        "insertion": [distance(vectors[t]) for t in insertion],
        "sim_deletion": [0.0] + [sim_change(vectors[t]) for t in deletion],
        "sim_insertion": [sim_change(vectors[t]) for t in insertion],
    }


# ----- the run


@dataclass
class Measured:
    """Per-text records of each setting (``base``, ``adapter``); ``computed``: texts measured in this process."""

    records: dict[str, list[dict[str, Any]]]
    computed: int = 0
    # One plain pass over the sample (every setting), timed in the same run: the report's time in units of it
    # is a ratio that carries across machines whose speeds differ 2x.
    sample_encode_seconds: float = 0.0


def _read_records(path: Path, digest: str) -> dict[tuple[str, str], dict[str, Any]]:
    """Records of earlier runs with the same config hash; a line cut short by a kill is ignored."""
    done: dict[tuple[str, str], dict[str, Any]] = {}
    if not path.is_file():
        return done
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("config") == digest:
            done[(record["key"], record["side"])] = record
    return done


def _append_records(path: Path, records: Sequence[dict[str, Any]]) -> None:
    """Append one line per record; a line a kill cut short is ended first, so it spoils no record after it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+b") as handle:
        size = handle.seek(0, os.SEEK_END)
        cut_short = size > 0 and handle.seek(size - 1) >= 0 and handle.read(1) != b"\n"
        lines = "".join(json.dumps(record) + "\n" for record in records)
        try:
            handle.write((("\n" if cut_short else "") + lines).encode())
            handle.flush()
        except OSError as error:
            full = disk_full(error, path)
            if full is None:
                raise
            raise full from None


def _score(
    encoder: Encoder,
    chunk: Sequence[ContentText],
    use_adapter: bool,
    config: FaithfulnessConfig,
    peak: int,
    seconds: dict[str, float],
    with_ig: Sequence[bool],
) -> tuple[list[dict[str, np.ndarray]], dict[int, tuple[float, int]]]:
    """Per text, each ranking method's token scores; integrated gradients' (relative delta, steps) by text index,
    for the texts ``with_ig`` marks."""
    per_text: list[dict[str, np.ndarray]] = [{} for _ in chunk]
    started = time.perf_counter()
    attention = attention_scores(encoder, chunk, use_adapter, config.methods, peak)
    share = (time.perf_counter() - started) / max(len(attention), 1)
    for name, values in attention.items():
        seconds[name] = seconds.get(name, 0.0) + share
        for index, value in enumerate(values):
            per_text[index][name] = value
    convergence: dict[int, tuple[float, int]] = {}
    if "gradient_x_input" in config.methods:
        started = time.perf_counter()
        for index, value in enumerate(gradient_x_input_scores(encoder, chunk, use_adapter)):
            per_text[index]["gradient_x_input"] = value
        seconds["gradient_x_input"] = seconds.get("gradient_x_input", 0.0) + time.perf_counter() - started
    chosen = [index for index, wanted in enumerate(with_ig) if wanted]
    if "integrated_gradients" in config.methods and chosen:
        started = time.perf_counter()
        values, deltas, steps = integrated_gradients_scores(encoder, [chunk[i] for i in chosen], use_adapter, config)
        for index, value, delta, step in zip(chosen, values, deltas, steps, strict=True):
            per_text[index]["integrated_gradients"] = value
            convergence[index] = (delta, step)
        seconds["integrated_gradients"] = seconds.get("integrated_gradients", 0.0) + time.perf_counter() - started
    return per_text, convergence


@dataclass(frozen=True)
class Pending:
    """A text to measure, with its original vector and its partner's, per setting label."""

    key: str
    text: ContentText
    original: dict[str, np.ndarray]
    partner: dict[str, np.ndarray]


def _run_chunk(
    encoder: Encoder,
    chunk: Sequence[Pending],
    settings: dict[str, bool],
    config: FaithfulnessConfig,
    peak: int,
    ig_keys: set[str] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Score, perturb and measure a chunk of texts in every setting (label -> ``use_adapter``); integrated
    gradients only for the keys in ``ig_keys`` (None: every text).

    Each setting ranks with its own scores; a method's perturbed texts of all settings are encoded in one
    batched pass that gives every setting's vector (a text two settings' orders share is encoded once).
    """
    texts = [item.text for item in chunk]
    with_ig = [ig_keys is None or item.key in ig_keys for item in chunk]
    spent: dict[str, float] = {}
    orders: dict[str, list[dict[str, list[list[int]]]]] = {}
    convergence: dict[str, dict[int, tuple[float, int]]] = {}
    for label, use_adapter in settings.items():
        scores, convergence[label] = _score(encoder, texts, use_adapter, config, peak, spent, with_ig)
        orders[label] = [
            orders_for(item.text, item.key, s, config.methods, config) for item, s in zip(chunk, scores, strict=True)
        ]
    # Per text: variant -> label -> vector; the text itself (insertion's last step when it has at most K content
    # tokens) is already encoded.
    vectors: list[dict[str, dict[str, np.ndarray]]] = [{item.text.text: dict(item.original)} for item in chunk]
    for method in config.methods:
        started = time.perf_counter()
        todo: list[tuple[int, str]] = []
        for index, text in enumerate(texts):
            k = min(config.k, len(text.positions))
            for label in settings:
                for order in orders[label][index].get(method, []):
                    deletion, insertion = variants(text, order, k)
                    todo += [(index, t) for t in (*deletion, *insertion) if t not in vectors[index]]
        todo = list(dict.fromkeys(todo))
        if todo:
            encoded = pooled_vectors(encoder, [t for _, t in todo], list(settings.values()))
            for row, (index, variant) in enumerate(todo):
                vectors[index][variant] = {label: encoded[flag][row] for label, flag in settings.items()}
        spent[method] = spent.get(method, 0.0) + time.perf_counter() - started
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
            if index in convergence[label]:
                record["ig_relative_delta"] = round(convergence[label][index][0], 6)
                record["ig_steps"] = convergence[label][index][1]
            records[label].append(record)
    return records


def _sample(config: FaithfulnessConfig) -> list[tuple[str, str]]:
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


def _partners(keys: Sequence[str], vectors: np.ndarray) -> list[int]:
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
    done = _read_records(records_path, config.digest())
    started = time.perf_counter()
    originals = pooled_vectors(encoder, [text.text for _, text in sample], list(settings.values()))
    measured = Measured({label: [] for label in settings}, sample_encode_seconds=time.perf_counter() - started)
    partners = {label: _partners([key for key, _ in sample], originals[flag]) for label, flag in settings.items()}
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
        records = _run_chunk(encoder, chunk, settings, config, peak, ig_keys)
        _append_records(records_path, [r for label in settings for r in records[label]])
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


# ----- statistics


def _mean_ci(values: np.ndarray, config: FaithfulnessConfig) -> dict[str, Any]:
    stats = paired_stats(values, config.bootstrap, seed=config.seed)
    return {
        "mean": round(float(stats.mean), 6),
        "ci_low": round(float(stats.low), 6),
        "ci_high": round(float(stats.high), 6),
    }


def _mean_curve(curves: Sequence[Sequence[float]], k: int, config: FaithfulnessConfig) -> dict[str, Any]:
    """Mean curve over texts at each step, over the texts whose curve reaches it (counts given)."""
    out: dict[str, list[Any]] = {"mean": [], "ci_low": [], "ci_high": [], "n": []}
    for step in range(k + 1):
        values = np.array([c[step] for c in curves if len(c) > step])
        out["n"].append(len(values))
        if len(values) >= 2:
            cell = _mean_ci(values, config)
        else:
            cell = {"mean": round(float(values.mean()), 6) if len(values) else None, "ci_low": None, "ci_high": None}
        for name in ("mean", "ci_low", "ci_high"):
            out[name].append(cell[name])
    return out


def summarise(records: Sequence[dict[str, Any]], config: FaithfulnessConfig) -> dict[str, Any]:
    """Per method: AOPC means with CIs, mean curves; paired differences; the most faithful method.

    A method is summarised over the texts it ran on (integrated gradients: ``ig_texts`` per task), a difference
    between two methods over the texts both ran on (``n`` given); a method with fewer than two texts is left out.
    The most faithful method is the best of those that ran on every text.
    """
    measured = {m: [r for r in records if m in r["methods"]] for m in config.methods}
    methods = [m for m in config.methods if len(measured[m]) >= 2]

    def aopc(method: str, measure: str, among: Sequence[dict[str, Any]]) -> np.ndarray:
        return np.array([r["methods"][method][f"aopc_{measure}"] for r in among])

    def both(a: str, b: str) -> list[dict[str, Any]]:
        return [r for r in records if a in r["methods"] and b in r["methods"]]

    out: dict[str, Any] = {"n_texts": len(records), "methods": {}, "paired_differences": {}, "most_faithful": {}}
    for method in methods:
        own = measured[method]
        entry: dict[str, Any] = {"n_texts": len(own)}
        entry |= {f"aopc_{m}": _mean_ci(aopc(method, m, own), config) for m in MEASURES}
        entry["curves"] = {
            m: _mean_curve([r["methods"][method]["curves"][m] for r in own], config.k, config) for m in MEASURES
        }
        if method == "random":
            draws = np.array([r["methods"]["random"]["aopc_deletion_draws"] for r in own])
            entry["random_spread"] = {
                "aopc_deletion_per_draw": np.round(draws.mean(0), 6).tolist(),
                "sd_between_draws": round(float(draws.mean(0).std(ddof=1)), 6) if draws.shape[1] > 1 else None,
                "sd_over_texts": round(float(draws.mean(1).std(ddof=1)), 6),
            }
        out["methods"][method] = entry
    for measure in ("deletion", "insertion"):
        differences = {}
        for i, a in enumerate(methods):
            for b in methods[i + 1 :]:
                common = both(a, b)
                stats = paired_stats(
                    aopc(a, measure, common) - aopc(b, measure, common), config.bootstrap, seed=config.seed
                )
                differences[f"{a} - {b}"] = {
                    "mean": round(float(stats.mean), 6),
                    "ci_low": round(float(stats.low), 6),
                    "ci_high": round(float(stats.high), 6),
                    "cohens_d": round(float(stats.cohens_d), 4),
                    "n": len(common),
                }
        out["paired_differences"][measure] = differences
        # Means over different texts do not compare: the methods that ran on every text are ranked, and one that
        # ran on a subset (integrated gradients, ``ig_texts``) is compared through its paired differences.
        ranked_methods = [m for m in methods if len(measured[m]) == len(records)] or methods
        means = np.array([aopc(m, measure, measured[m]).mean() for m in ranked_methods])
        order = np.argsort(-means)
        best = ranked_methods[order[0]]
        runner = ranked_methods[order[1]] if len(ranked_methods) > 1 else None
        verdict: dict[str, Any] = {"method": best, "aopc": round(float(means[order[0]]), 6)}
        verdict["not_ranked"] = [m for m in methods if m not in ranked_methods]  # subsets: see paired differences
        if runner is not None:
            common = both(best, runner)
            gap = aopc(best, measure, common) - aopc(runner, measure, common)
            stats = paired_stats(gap, config.bootstrap, seed=config.seed)
            verdict.update(
                runner_up=runner,
                margin=round(float(stats.mean), 6),
                margin_ci=[round(float(stats.low), 6), round(float(stats.high), 6)],
                separated=bool(stats.low > 0),
            )
        out["most_faithful"][measure] = verdict
    return out


# ----- report


def build_encoder(config: FaithfulnessConfig) -> Encoder:
    loaded = load_model(config.model, config.adapter, device=config.device)
    check_eager(loaded.backbone)
    return Encoder(
        loaded,
        prompt=config.prompt or loaded.adapter_metadata.get("prompt") or "eol",
        pooling=config.pooling or loaded.adapter_metadata.get("pooling") or "last",
        cache=False,
        precision="fp32",
        max_length=config.max_length,
    )


def run_report(
    config: FaithfulnessConfig,
    encoder: Encoder | None = None,
    sample: Sequence[tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """The whole report; ``sample`` ((key, text) pairs, keys ``task:index``) replaces the task sample (tests)."""
    config.check()
    started = time.perf_counter()
    encoder = encoder or build_encoder(config)
    layers = len(resolve_layers(encoder.loaded.backbone, None))
    peak = config.peak_layer if config.peak_layer is not None else default_peak_layer(config.model, layers)
    if not -layers <= peak < layers:
        raise ConfigError(f"--peak-layer {peak} is out of range: use 0..{layers - 1}.")
    out_dir = Path(config.out)
    pairs = list(sample) if sample is not None else _sample(config)
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
            **{k: v for k, v in asdict(config).items() if k not in ("out",)},
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
            method: {measure: _difference(runs, method, measure, config) for measure in ("deletion", "insertion")}
            for method in config.methods
        }
    report["speed"] = {"settings": list(runs), **speed_from_records(runs["base"]), "texts_measured": measured.computed}
    report["speed"]["peak_rss_mb"] = round(peak_rss_mb(), 1)
    report["speed"]["total_seconds"] = round(time.perf_counter() - started, 1)
    report["speed"]["sample_encode_seconds"] = round(measured.sample_encode_seconds, 3)
    report["speed"]["total_in_sample_encodes"] = round(
        report["speed"]["total_seconds"] / max(measured.sample_encode_seconds, 1e-9), 1
    )
    report["figures"] = plots.write_figures(plots.faithfulness_figures(report), out_dir, png=config.png)
    write_json(out_dir / REPORT_FILE, report)
    return report


def speed_from_records(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Texts/s per method from the records' own timings (scoring in every setting + perturbed texts encoded for
    all settings), over every text, including those an earlier, resumed run measured."""
    texts: Counter[str] = Counter()
    seconds: Counter[str] = Counter()
    for record in records:
        for method, value in record.get("seconds", {}).items():
            texts[method] += 1
            seconds[method] += value
    return {
        "texts_measured_per_method": dict(texts),
        "seconds_per_method": {m: round(v, 1) for m, v in seconds.items()},
        "texts_per_second": {m: round(texts[m] / v, 2) for m, v in seconds.items() if v > 0},
    }


def ig_convergence(records: Sequence[dict[str, Any]], config: FaithfulnessConfig) -> dict[str, Any]:
    """Distribution of integrated gradients' relative completeness errors and of the steps they took."""
    deltas = np.array([r["ig_relative_delta"] for r in records])
    steps = np.array([r.get("ig_steps", config.ig_steps) for r in records])
    quantiles = (0.5, 0.9, 0.99)
    return {
        "tolerance": config.ig_tolerance,
        "relative_delta": {
            **{f"q{round(q * 100)}": round(float(np.quantile(deltas, q)), 4) for q in quantiles},
            "max": round(float(deltas.max()), 4),
            "n_above_tolerance": int((deltas > config.ig_tolerance).sum()),
        },
        "steps": {
            "mean": round(float(steps.mean()), 1),
            **{f"q{round(q * 100)}": int(np.quantile(steps, q)) for q in quantiles},
            "max": int(steps.max()),
            "counts": {str(k): int(v) for k, v in zip(*np.unique(steps, return_counts=True), strict=True)},
        },
    }


def _difference(
    runs: dict[str, list[dict[str, Any]]], method: str, measure: str, config: FaithfulnessConfig
) -> dict[str, Any]:
    """Adapter minus base AOPC of ``method`` over the texts it ran on in both settings."""

    def values(records: list[dict[str, Any]]) -> dict[str, float]:
        return {r["key"]: r["methods"][method][f"aopc_{measure}"] for r in records if method in r["methods"]}

    base, adapter = values(runs["base"]), values(runs["adapter"])
    diffs = np.array([adapter[k] - base[k] for k in base if k in adapter])
    return {**_mean_ci(diffs, config), "n": len(diffs)} if len(diffs) >= 2 else {"n": len(diffs)}


def text_curves(
    encoder: Encoder,
    text: str,
    partner: str,
    k: int = FaithfulnessConfig.k,
    methods: Sequence[str] = METHODS,
    random_seeds: int = FaithfulnessConfig.random_seeds,
) -> dict[str, dict[str, Any]]:
    """One text's per-method curves and AOPCs (its record), per setting; ``partner`` is the pair's other text."""
    config = FaithfulnessConfig(model=encoder.loaded.name, k=k, methods=tuple(methods), random_seeds=random_seeds)
    config.check()
    content = content_text(encoder, text)
    if not content.positions:
        raise ConfigError(f"{text[:40]!r} has no content tokens (only stopwords or punctuation); nothing to rank.")
    layers = len(resolve_layers(encoder.loaded.backbone, None))
    peak = default_peak_layer(encoder.loaded.name, layers)
    settings = sides(encoder.loaded.has_adapter)
    vectors = pooled_vectors(encoder, [content.text, partner], list(settings.values()))
    pending = Pending(
        "text:0",
        content,
        {label: vectors[flag][0] for label, flag in settings.items()},
        {label: vectors[flag][1] for label, flag in settings.items()},
    )
    return {label: records[0] for label, records in _run_chunk(encoder, [pending], settings, config, peak).items()}


# ----- CLI


def build_parser() -> argparse.ArgumentParser:
    defaults = FaithfulnessConfig()
    parser = argparse.ArgumentParser(prog="python -m analysis.faithfulness", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=defaults.model)
    parser.add_argument("--adapter", default=None, help="LoRA adapter folder; without it base only")
    parser.add_argument("--prompt", default=None, help="prompt name or template (default: adapter's, else eol)")
    parser.add_argument("--pooling", default=None, help="pooling (default: adapter's, else last)")
    parser.add_argument(
        "--tasks",
        nargs="+",
        default=list(defaults.tasks),
        help="local or transfer tasks, or PATH[:TEXTCOL[:LABELCOL]] files",
    )
    parser.add_argument("--n", type=int, default=defaults.n, help="texts per task")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--k", type=int, default=defaults.k, help="content tokens removed / inserted at most")
    parser.add_argument("--methods", nargs="+", default=list(defaults.methods), help=", ".join(METHODS))
    parser.add_argument("--random-seeds", type=int, default=defaults.random_seeds)
    parser.add_argument("--peak-layer", type=int, default=None, help="default: the attention report's peak")
    parser.add_argument("--ig-steps", type=int, default=defaults.ig_steps, help="IG steps of the first segment")
    parser.add_argument("--ig-max-steps", type=int, default=defaults.ig_max_steps, help="IG steps per text at most")
    parser.add_argument(
        "--ig-tolerance", type=float, default=defaults.ig_tolerance, help="IG completeness error allowed (relative)"
    )
    parser.add_argument(
        "--ig-texts", type=int, default=defaults.ig_texts, help="IG on the first N texts of each task (0: all)"
    )
    parser.add_argument("--max-length", type=int, default=defaults.max_length)
    parser.add_argument("--chunk", type=int, default=defaults.chunk, help="texts per batch and resume checkpoint")
    parser.add_argument("--bootstrap", type=int, default=defaults.bootstrap)
    parser.add_argument("--out", default=defaults.out)
    parser.add_argument("--no-png", dest="png", action="store_false", help="HTML figures only")
    parser.add_argument("--device", default=defaults.device, help=DEVICE_HELP)
    return parser


def config_from_args(args: argparse.Namespace) -> FaithfulnessConfig:
    values = {f.name: getattr(args, f.name) for f in fields(FaithfulnessConfig)}
    values["tasks"], values["methods"] = tuple(values["tasks"]), tuple(values["methods"])
    return FaithfulnessConfig(**values)


def main(argv: Sequence[str] | None = None) -> int:
    config = config_from_args(build_parser().parse_args(argv))
    report = run_report(config)
    print(
        f"{report['n_texts']} texts ({report['n_skipped_no_content']} skipped: no content tokens, "
        f"{report['n_truncated']} with fewer than K={config.k} content tokens: curves truncated)"
    )
    for label in sides("adapter" in report):
        summary = report[label]
        for method, entry in summary["methods"].items():
            d, i = entry["aopc_deletion"], entry["aopc_insertion"]
            print(
                f"{label:8s} {method:22s} n {entry['n_texts']:4d}  "
                f"AOPC deletion {d['mean']:.4f} [{d['ci_low']:.4f}, {d['ci_high']:.4f}]  "
                f"insertion {i['mean']:.4f} [{i['ci_low']:.4f}, {i['ci_high']:.4f}]"
            )
        best = summary["most_faithful"]["deletion"]
        print(
            f"{label}: most faithful (deletion) {best['method']}, "
            f"margin over the runner-up {best.get('margin')} CI {best.get('margin_ci')}"
        )
        convergence = summary.get("integrated_gradients_convergence")
        if convergence:
            delta, steps = convergence["relative_delta"], convergence["steps"]
            print(
                f"{label} IG completeness error: median {delta['q50']:.3f}, q90 {delta['q90']:.3f}, max "
                f"{delta['max']:.3f} ({delta['n_above_tolerance']} above {convergence['tolerance']}); "
                f"steps mean {steps['mean']}, max {steps['max']}"
            )
    speed = report["speed"]
    print(
        f"texts/s per method ({' and '.join(speed['settings'])} together): "
        + ", ".join(f"{m} {v:.2f}" for m, v in speed["texts_per_second"].items())
    )
    print(
        f"peak RSS {speed['peak_rss_mb']:.0f} MB, total {speed['total_seconds']:.0f} s = "
        f"{speed['total_in_sample_encodes']:.0f}x one encode of the sample ({speed['sample_encode_seconds']:.0f} s)"
    )
    print(f"wrote {Path(config.out) / REPORT_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
