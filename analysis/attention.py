"""Where the pooled token looks: attention shares by token role, base vs adapter, with statistics.

For each text, layer and head, the pooled token's attention row is split into categories:

- ``sink``: the first token. With a BOS (Llama tokenizers) that is the BOS; SmolLM2's tokenizer
  adds none, and its first prompt token ("This") takes the sink's role, so position 0 is the
  sink either way. This makes base-vs-adapter comparisons across tokenizers like for like.
- ``special``: any other special token (e.g. an EOS the pooled token itself may be).
- ``prompt``, ``content``, ``function``, ``punct``: the token roles of ``core.roles``.

Shares are reported raw (all six sum to 1) and renormalised over the four non-sink, non-special
categories. The shift is adapter minus base on the same texts; corpus statistics resample texts.

CLI: ``python -m analysis.attention --model smollm2-135m --adapter DIR --prompt cluster --task trec-fine
--n 500 --out report/``.
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
from jaxtyping import Float, Int

from core.capture import CAPTURE_MODES, CaptureMode, capture_attention, check_eager, num_heads, resolve_layers
from core.encoder import Encoder, PreparedText
from core.errors import run_cli
from core.pooling import Pooling
from core.roles import Role

Category = Literal["sink", "special", "prompt", "content", "function", "punct"]
CATEGORIES: tuple[str, ...] = get_args(Category)
RENORMALISED: tuple[str, ...] = ("prompt", "content", "function", "punct")
QueryToken = Literal["last", "eos"]
QUERY_TOKENS: tuple[str, ...] = get_args(QueryToken)

PAPER_EXAMPLE = "a man is driving a car"
DEFAULT_TASK = "trec-fine"
_ROLE_CATEGORY = {
    Role.SPECIAL: "special",
    Role.PROMPT: "prompt",
    Role.CONTENT: "content",
    Role.FUNCTION: "function",
    Role.PUNCT: "punct",
}

Rows = Float[np.ndarray, "layers heads keys"]
Shares = Float[np.ndarray, "texts layers heads categories"]


def token_categories(item: PreparedText, query: int) -> Int[np.ndarray, " keys"]:
    """Category index of each key token ``0..query`` (position 0 is the sink)."""
    categories = [CATEGORIES.index(_ROLE_CATEGORY[Role(role)]) for role in item.roles[: query + 1]]
    categories[0] = CATEGORIES.index("sink")
    return np.asarray(categories, dtype=np.int64)


def query_index(item: PreparedText, token: QueryToken) -> int:
    """Position of the pooled token inside the text's own (unpadded) sequence."""
    if token == "last":
        return item.length - 1
    if token == "eos":
        if item.eos_index < 0:
            raise ValueError("The 'eos' query token needs a tokenizer with an EOS token; use --token last.")
        return item.eos_index
    raise ValueError(f"Unknown query token {token!r}; choose one of: {', '.join(QUERY_TOKENS)}.")


@dataclass
class TextAttention:
    """The pooled token's attention in one text: ``rows`` is (layers, heads, keys) over keys ``0..query``."""

    tokens: list[str]
    categories: Int[np.ndarray, " keys"]
    rows: Rows
    maps: Float[np.ndarray, "layers heads keys keys"] | None = None  # full maps when kept

    def weights(
        self, layer: int = -1, head: int | None = None, renormalise: bool = False
    ) -> Float[np.ndarray, " keys"]:
        """One layer's row (mean over heads unless ``head``), optionally without sink and specials."""
        layers, heads = self.rows.shape[:2]
        if not -layers <= layer < layers:
            raise ValueError(f"Layer {layer} is out of range: use 0..{layers - 1} or -{layers}..-1.")
        if head is not None and not 0 <= head < heads:
            raise ValueError(f"Head {head} is out of range: this model has {heads} heads, so use 0..{heads - 1}.")
        row = self.rows[layer].mean(0) if head is None else self.rows[layer, head]
        if renormalise:
            row = row * _kept_mask(self.categories)
            row = row / max(float(row.sum()), 1e-12)
        return row


@dataclass
class CapturedCorpus:
    """Attention of the pooled token for a list of texts, from one model setting (base or adapter)."""

    texts: list[str]
    items: list[TextAttention]
    embeddings: Float[np.ndarray, "texts hidden"]  # the encoder's pooled vectors from the same forward
    use_adapter: bool
    mode: CaptureMode
    token: QueryToken
    layers: list[int]
    seconds: float
    n_tokens: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def texts_per_second(self) -> float:
        return len(self.texts) / max(self.seconds, 1e-9)


def capture_corpus(
    encoder: Encoder,
    texts: Sequence[str],
    *,
    use_adapter: bool,
    mode: CaptureMode = "rows",
    token: QueryToken = "last",
    layers: Sequence[int] | None = None,
    keep_maps: bool = False,
) -> CapturedCorpus:
    """Run the encoder over ``texts`` once, capturing the pooled token's attention in every layer and head.

    ``keep_maps`` (full mode only) also keeps each text's full (layers, heads, keys, keys) maps: memory grows
    with the square of the length, so keep it for a few texts.
    """
    if mode not in CAPTURE_MODES:
        raise ValueError(f"Unknown capture mode {mode!r}; choose one of: {', '.join(CAPTURE_MODES)}.")
    if keep_maps and mode != "full":
        raise ValueError("keep_maps needs mode='full'.")
    backbone = encoder.loaded.backbone
    check_eager(backbone)
    layer_list = resolve_layers(backbone, layers)
    prepared = encoder.prepare(list(texts))
    queries = [query_index(item, token) for item in prepared]
    pooling = Pooling(encoder.pooling, encoder.layer, encoder.attention_layer)
    hidden_indices = pooling.layer.indices(encoder.num_hidden_states)
    attention_layers = [encoder.attention_layer] if encoder.pooling == "attention" else []
    items: list[TextAttention | None] = [None] * len(prepared)
    embeddings = np.zeros((len(prepared), encoder.dim), dtype=np.float32)
    started = time.perf_counter()
    with torch.inference_mode(), encoder.loaded.adapter_enabled(use_adapter):
        for group in encoder.batches(prepared):
            batch = encoder.collate([prepared[i] for i in group])
            query = batch["start"] + torch.tensor([queries[i] for i in group])
            with capture_attention(backbone, layer_list, mode, query) as captured:
                states = encoder.forward(batch, hidden_indices, attention_layers)
            embeddings[group] = pooling(states).numpy()
            for row, index in enumerate(group):
                start, q = int(batch["start"][row]), queries[index]
                keys = slice(start, start + q + 1)
                if mode == "full":
                    maps = np.stack([captured[layer][row, :, keys, keys].numpy() for layer in layer_list])
                    rows = maps[:, :, q, :]
                else:
                    rows = np.stack([captured[layer][row, :, keys].numpy() for layer in layer_list])
                    maps = None
                items[index] = TextAttention(
                    tokens=_token_strings(encoder, prepared[index].input_ids[: q + 1]),
                    categories=token_categories(prepared[index], q),
                    rows=np.ascontiguousarray(rows),
                    maps=maps if keep_maps else None,
                )
    seconds = time.perf_counter() - started
    return CapturedCorpus(
        texts=list(texts),
        items=[item for item in items if item is not None],
        embeddings=embeddings,
        use_adapter=use_adapter,
        mode=mode,
        token=token,
        layers=layer_list,
        seconds=seconds,
        n_tokens=sum(len(item.input_ids) for item in prepared),
    )


def _token_strings(encoder: Encoder, ids: Sequence[int]) -> list[str]:
    return [encoder.tokenizer.decode([i]) for i in ids]


def _kept_mask(categories: np.ndarray) -> np.ndarray:
    return np.isin(categories, [CATEGORIES.index(c) for c in RENORMALISED]).astype(np.float64)


# ----- per-text measures


def role_shares(corpus: CapturedCorpus, renormalise: bool = False) -> Shares:
    """Attention mass of the pooled token on each category: (texts, layers, heads, categories).

    ``renormalise`` drops sink and special tokens and rescales the rest to sum to 1 (their columns are 0).
    """
    out = np.zeros((len(corpus.items), *corpus.items[0].rows.shape[:2], len(CATEGORIES)), dtype=np.float64)
    for index, item in enumerate(corpus.items):
        onehot = np.eye(len(CATEGORIES))[item.categories]  # (keys, categories)
        shares = item.rows.astype(np.float64) @ onehot
        if renormalise:
            shares[..., [CATEGORIES.index("sink"), CATEGORIES.index("special")]] = 0.0
            shares /= np.maximum(shares.sum(-1, keepdims=True), 1e-12)
        out[index] = shares
    return out


def attention_entropy(corpus: CapturedCorpus, renormalise: bool = False) -> Float[np.ndarray, "texts layers heads"]:
    """Entropy (nats) of each attention row; ``renormalise`` first drops sink and special tokens."""
    out = np.zeros((len(corpus.items), *corpus.items[0].rows.shape[:2]), dtype=np.float64)
    for index, item in enumerate(corpus.items):
        rows = item.rows.astype(np.float64)
        if renormalise:
            rows = rows * _kept_mask(item.categories)
            rows = rows / np.maximum(rows.sum(-1, keepdims=True), 1e-12)
        out[index] = -(rows * np.log(np.clip(rows, 1e-30, None))).sum(-1)
    return out


# ----- statistics


@dataclass
class PairedStats:
    """Mean of a paired difference with a bootstrap CI over texts and a paired Cohen's d, elementwise."""

    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    cohens_d: np.ndarray
    n: int
    n_boot: int
    confidence: float

    def column(self, index: int) -> PairedStats:
        """The statistics of one entry of the last axis."""
        pick = (..., index)
        return PairedStats(
            self.mean[pick], self.low[pick], self.high[pick], self.cohens_d[pick], self.n, self.n_boot, self.confidence
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean": _rounded(self.mean),
            "ci_low": _rounded(self.low),
            "ci_high": _rounded(self.high),
            "cohens_d": _rounded(self.cohens_d),
            "n": self.n,
            "n_boot": self.n_boot,
            "confidence": self.confidence,
        }


def paired_stats(
    differences: Float[np.ndarray, "texts ..."], n_boot: int = 2000, confidence: float = 0.95, seed: int = 0
) -> PairedStats:
    """Percentile bootstrap over texts (the first axis) and d_z = mean / sd of the differences."""
    diffs = np.asarray(differences, dtype=np.float64)
    n = diffs.shape[0]
    if n < 2:
        raise ValueError(f"Paired statistics need at least 2 texts, got {n}.")
    flat = diffs.reshape(n, -1)
    rng = np.random.default_rng(seed)
    # Resample counts instead of indices: one (n_boot, n) @ (n, k) product for every element at once.
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)
    means = counts @ flat / n
    alpha = (1.0 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha], axis=0)
    mean = flat.mean(0)
    sd = flat.std(0, ddof=1)
    d = np.divide(mean, sd, out=np.zeros_like(mean), where=sd > 1e-12)
    shape = diffs.shape[1:]
    return PairedStats(
        mean.reshape(shape), low.reshape(shape), high.reshape(shape), d.reshape(shape), n, n_boot, confidence
    )


def _rounded(array: np.ndarray, digits: int = 6) -> Any:
    return np.round(np.asarray(array, dtype=np.float64), digits).tolist()


def summarise_base(corpus: CapturedCorpus) -> dict[str, Any]:
    """Mean shares and entropy per layer (heads averaged) and per layer and head, for one setting."""
    raw, renorm = role_shares(corpus), role_shares(corpus, renormalise=True)
    entropy, entropy_renorm = attention_entropy(corpus), attention_entropy(corpus, renormalise=True)
    return {
        "shares_per_layer": _by_category(raw.mean((0, 2))),
        "shares_renormalised_per_layer": _by_category(renorm.mean((0, 2)), RENORMALISED),
        "shares_per_layer_head": _by_category(raw.mean(0)),
        "shares_renormalised_per_layer_head": _by_category(renorm.mean(0), RENORMALISED),
        "entropy_per_layer": _rounded(entropy.mean((0, 2))),
        "entropy_renormalised_per_layer": _rounded(entropy_renorm.mean((0, 2))),
        "entropy_per_layer_head": _rounded(entropy.mean(0)),
    }


def _by_category(array: np.ndarray, categories: Sequence[str] = CATEGORIES) -> dict[str, Any]:
    return {name: _rounded(array[..., CATEGORIES.index(name)]) for name in categories}


def shift_report(
    base: CapturedCorpus,
    adapter: CapturedCorpus,
    *,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    focus: Category = "content",
    top_k: int = 10,
) -> dict[str, Any]:
    """Adapter minus base: per layer (heads averaged) and per layer and head, with CIs and effect sizes.

    ``focus`` (a renormalised category) ranks the layers and heads that moved most.
    """
    if base.texts != adapter.texts or base.token != adapter.token:
        raise ValueError("Base and adapter captures must cover the same texts with the same query token.")
    if focus not in RENORMALISED:
        raise ValueError(f"focus must be one of {', '.join(RENORMALISED)}, got {focus!r}.")
    out: dict[str, Any] = {"focus": focus, "n_texts": len(base.texts)}
    for label, renorm in (("raw", False), ("renormalised", True)):
        diff = role_shares(adapter, renorm) - role_shares(base, renorm)  # (texts, layers, heads, categories)
        names = RENORMALISED if renorm else CATEGORIES
        columns = [CATEGORIES.index(name) for name in names]
        per_layer = paired_stats(diff.mean(2)[..., columns], n_boot, confidence, seed)
        out[f"per_layer_{label}"] = {name: per_layer.column(j).to_dict() for j, name in enumerate(names)}
        if renorm:
            focus_diff = diff[..., CATEGORIES.index(focus)]  # (texts, layers, heads)
            per_head = paired_stats(focus_diff, n_boot, confidence, seed)
            out["per_layer_head_focus"] = per_head.to_dict()
            out["top_heads"] = _top_cells(per_head, top_k)
            layer_stats = paired_stats(focus_diff.mean(2), n_boot, confidence, seed)
            out["top_layers"] = _top_cells(layer_stats, top_k)
            # Total variation between base and adapter category distributions: movement in any direction.
            tv = 0.5 * np.abs(diff.mean(2)[..., columns]).sum(-1)
            out["total_variation_per_layer"] = _rounded(tv.mean(0))
    entropy_diff = attention_entropy(adapter) - attention_entropy(base)
    out["entropy_shift_per_layer"] = paired_stats(entropy_diff.mean(2), n_boot, confidence, seed).to_dict()
    return out


def _top_cells(stats: PairedStats, top_k: int) -> list[dict[str, Any]]:
    order = np.argsort(-np.abs(stats.mean), axis=None)[:top_k]
    cells = []
    for flat in order:
        index = np.unravel_index(flat, stats.mean.shape)
        cell = {"layer": int(index[0])}
        if len(index) > 1:
            cell["head"] = int(index[1])
        cell.update(
            shift=round(float(stats.mean[index]), 6),
            ci_low=round(float(stats.low[index]), 6),
            ci_high=round(float(stats.high[index]), 6),
            cohens_d=round(float(stats.cohens_d[index]), 4),
        )
        cells.append(cell)
    return cells


def token_bars(
    base: TextAttention, adapter: TextAttention | None, layer: int = -1, head: int | None = None
) -> dict[str, Any]:
    """Per-token attention of the pooled token in one layer, base vs adapter (raw and renormalised)."""
    data: dict[str, Any] = {
        "tokens": base.tokens,
        "categories": [CATEGORIES[c] for c in base.categories],
        "layer": layer % base.rows.shape[0],
        "head": head,
        "base": _rounded(base.weights(layer, head)),
        "base_renormalised": _rounded(base.weights(layer, head, renormalise=True)),
    }
    if adapter is not None:
        data["adapter"] = _rounded(adapter.weights(layer, head))
        data["adapter_renormalised"] = _rounded(adapter.weights(layer, head, renormalise=True))
    return data


def layer_token_matrix(
    item: TextAttention, head: int | None = None, renormalise: bool = False
) -> Float[np.ndarray, "layers keys"]:
    """The pooled token's attention over the keys in every layer (mean over heads unless ``head``)."""
    return np.stack([item.weights(layer, head, renormalise) for layer in range(item.rows.shape[0])])


def role_shares_per_layer(
    item: TextAttention, head: int | None = None, renormalise: bool = False
) -> Float[np.ndarray, "layers categories"]:
    """Attention mass on each category per layer for one text (columns in ``CATEGORIES`` order)."""
    matrix = layer_token_matrix(item, head, renormalise)
    return np.stack([matrix[:, item.categories == c].sum(1) for c in range(len(CATEGORIES))], axis=1)


def sample_texts(texts: Sequence[str], n: int, seed: int) -> list[str]:
    """A seeded sample of ``n`` texts in corpus order (all of them if ``n`` >= their number)."""
    if n < 2:
        raise ValueError(f"--n must be at least 2 for paired statistics, got {n}.")
    if n >= len(texts):
        return list(texts)
    return [texts[i] for i in sorted(random.Random(seed).sample(range(len(texts)), n))]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----- CLI


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analysis.attention", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--adapter", default=None, help="LoRA adapter folder; without it only base shares")
    parser.add_argument("--prompt", default=None, help="prompt name or template (default: adapter's, else cluster)")
    parser.add_argument("--pooling", default=None, help="pooling for the embeddings (default: adapter's, else last)")
    parser.add_argument("--task", default=DEFAULT_TASK, help="a local task, or a csv/jsonl/... file with a text column")
    parser.add_argument("--split", default="test", choices=["test", "train"])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="report")
    parser.add_argument("--token", default=None, choices=QUERY_TOKENS, help="query token (default: follows pooling)")
    parser.add_argument("--capture", default="rows", choices=CAPTURE_MODES)
    parser.add_argument("--layer", type=int, default=-1, help="layer of the per-token bars")
    parser.add_argument("--head", type=int, default=None, help="head of the per-token bars (default: mean)")
    parser.add_argument("--examples", nargs="*", default=None, help="texts for token bars (default: paper's + 3)")
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--bench-n", type=int, default=64, help="texts for the rows-vs-full speed comparison")
    parser.add_argument("--attribution-n", type=int, default=8, help="corpus texts attributed (0 = none)")
    parser.add_argument("--ig-steps", type=int, default=16, help="IG steps per path segment")
    parser.add_argument("--ig-max-steps", type=int, default=256, help="cap on IG steps per attribution")
    return parser


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole report: capture, statistics, examples, attribution, figures; returns the JSON payload."""
    from analysis import plots as figures
    from analysis.attribution import Attributor, agreement
    from core.data import resolve_dataset
    from core.models import load_model

    out_dir = Path(args.out)
    loaded = load_model(args.model, args.adapter)
    check_eager(loaded.backbone)
    layers = len(resolve_layers(loaded.backbone, None))
    heads = num_heads(loaded.backbone)
    if not -layers <= args.layer < layers:
        raise ValueError(f"--layer {args.layer} is out of range: use 0..{layers - 1} or -{layers}..-1.")
    if args.head is not None and not 0 <= args.head < heads:
        raise ValueError(f"--head {args.head} is out of range: this model has {heads} heads, so use 0..{heads - 1}.")
    pooling = args.pooling or loaded.adapter_metadata.get("pooling") or "last"
    encoder = Encoder(
        loaded,
        prompt=args.prompt or loaded.adapter_metadata.get("prompt") or "cluster",
        pooling=pooling,
        cache=False,
        precision="fp32",
        max_length=args.max_length,
    )
    token: QueryToken = args.token or ("eos" if encoder.pooling == "eos" else "last")
    has_adapter = loaded.has_adapter
    dataset = resolve_dataset(args.task, args.split)
    texts = sample_texts(dataset.texts, args.n, args.seed)
    examples = args.examples if args.examples is not None else [PAPER_EXAMPLE, *texts[:3]]
    print(f"{len(texts)} texts of {args.task}/{args.split}; prompt {encoder.prompt.template!r}; query token {token}")

    base = capture_corpus(encoder, texts, use_adapter=False, mode=args.capture, token=token)
    print(
        f"capture base ({args.capture}): {base.texts_per_second:.1f} texts/s, {base.n_tokens / base.seconds:.0f} tok/s"
    )
    adapter = None
    if has_adapter:
        adapter = capture_corpus(encoder, texts, use_adapter=True, mode=args.capture, token=token)
        print(f"capture adapter ({args.capture}): {adapter.texts_per_second:.1f} texts/s")
    other: CaptureMode = "full" if args.capture == "rows" else "rows"
    bench_texts = texts[: max(2, min(args.bench_n, len(texts)))]
    bench = capture_corpus(encoder, bench_texts, use_adapter=False, mode=other, token=token)
    rates = {args.capture: base.texts_per_second, other: bench.texts_per_second}
    print(
        f"capture speed: rows {rates['rows']:.1f} texts/s, full {rates['full']:.1f} texts/s "
        f"(full on {len(bench_texts)} texts); peak RSS {peak_rss_mb():.0f} MB"
    )

    report: dict[str, Any] = {
        "settings": {
            "model": args.model,
            "adapter": args.adapter,
            "prompt": encoder.prompt.template,
            "pooling": encoder.pooling,
            "query_token": token,
            "task": args.task,
            "split": args.split,
            "n_texts": len(texts),
            "seed": args.seed,
            "capture_mode": args.capture,
            "dataset_sha256": dataset.sha256,
            "weights_sha256": loaded.weights_hash,
            "adapter_sha256": loaded.adapter_hash,
            "layers": layers,
            "heads": heads,
            "categories": list(CATEGORIES),
            "renormalised_categories": list(RENORMALISED),
            "sink": "position 0 (the BOS where the tokenizer adds one, else the prompt's first token)",
        },
        "speed": {
            "texts_per_second": {k: round(v, 2) for k, v in rates.items()},
            "full_mode_texts": len(bench_texts) if other == "full" else len(texts),
            "tokens_per_second_base": round(base.n_tokens / base.seconds, 1),
            "peak_rss_mb": round(peak_rss_mb(), 1),
        },
        "base": summarise_base(base),
    }
    if adapter is not None:
        report["adapter"] = summarise_base(adapter)
        report["shift"] = shift_report(base, adapter, n_boot=args.bootstrap, seed=args.seed)
    else:
        report["shift"] = None
        report["note"] = "No adapter given: base shares only, no shift is available."
        print(report["note"])

    example_base = capture_corpus(encoder, examples, use_adapter=False, token=token)
    example_adapter = capture_corpus(encoder, examples, use_adapter=True, token=token) if has_adapter else None
    report["examples"] = [
        {
            "text": text,
            **token_bars(
                example_base.items[i], example_adapter.items[i] if example_adapter else None, args.layer, args.head
            ),
        }
        for i, text in enumerate(examples)
    ]

    if args.attribution_n > 0:
        attributor = Attributor(encoder, token=token, n_steps=args.ig_steps, max_steps=args.ig_max_steps)
        attr_texts = [examples[0], *texts[: args.attribution_n]]
        report["attribution"] = {}
        settings = [False, True] if has_adapter else [False]
        for use_adapter in settings:
            label = "adapter" if use_adapter else "base"
            started = time.perf_counter()
            shares = [attributor.token_shares(text, use_adapter=use_adapter) for text in attr_texts]
            attention = capture_corpus(encoder, attr_texts, use_adapter=use_adapter, token=token)
            similarity = attributor.similarity(examples[0], _partner(examples[0]), use_adapter=use_adapter)
            agreement_data = agreement(attention.items, shares, layer=args.layer)
            report["attribution"][label] = {
                "token_shares": [s.to_dict() for s in shares],
                "similarity": similarity.to_dict(),
                "agreement": agreement_data,
                "seconds": round(time.perf_counter() - started, 1),
            }
            deltas = [s.relative_delta for s in shares] + [similarity.a.relative_delta, similarity.b.relative_delta]
            print(
                f"attribution {label}: {len(attr_texts)} texts + 1 pair in {time.perf_counter() - started:.0f}s; "
                f"relative convergence delta max {max(deltas):.4f}, steps used "
                f"{sorted({s.steps for s in shares})}; Spearman attention vs attribution "
                f"mean {agreement_data['mean_rho']} (pooled {agreement_data['pooled_rho']})"
            )

    made = figures.report_figures(report)
    report["figures"] = figures.write_figures(made, out_dir)
    report["speed"]["peak_rss_mb"] = round(peak_rss_mb(), 1)
    from core.files import write_json

    write_json(out_dir / "attention_report.json", report)
    png = (
        "PNG written" if report["figures"]["png"] else f"PNG not written ({report['figures']['png_error']}); HTML only"
    )
    print(f"wrote {out_dir / 'attention_report.json'} and {len(made)} figures ({png})")
    return report


def _partner(text: str) -> str:
    return "a person is riding a bicycle" if text == PAPER_EXAMPLE else "a man is driving a car"


def main(argv: list[str] | None = None) -> int:
    from core.data import DataError

    args = _build_parser().parse_args(argv)
    started = time.perf_counter()
    try:
        report = run(args)
    except (ValueError, FileNotFoundError, RuntimeError, KeyError, OSError, DataError) as error:
        message = " ".join(str(error).split())
        print(f"error: {message}", file=sys.stderr)
        return 2
    shift = report.get("shift")
    if shift:
        top = shift["top_layers"][0]
        print(
            f"largest {shift['focus']} shift (renormalised, heads averaged): layer {top['layer']} "
            f"{top['shift']:+.4f} [{top['ci_low']:+.4f}, {top['ci_high']:+.4f}], d={top['cohens_d']:.2f}"
        )
    print(f"total {time.perf_counter() - started:.0f}s, peak RSS {peak_rss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
