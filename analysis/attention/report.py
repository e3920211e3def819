"""The attention report: capture base and adapter on a corpus sample, statistics, examples, attribution, figures.

``run_report(AttentionReportConfig(...))`` writes ``attention_report.json`` and the figures to
``config.out`` and returns the payload; ``python -m analysis.attention`` builds the config from its
options (``main``). The measurements live in ``analysis.attention``, IG in
``analysis.attribution.integrated_gradients``.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from analysis import plots
from analysis.attention import (
    METHOD_CATEGORIES,
    PAPER_EXAMPLE,
    capture_corpus,
    query_token_for,
    share_cis,
    shift_report,
    summarise_base,
    token_bars,
)
from analysis.attribution.integrated_gradients import Attributor, agreement
from analysis.categories import CATEGORIES, QUERY_TOKENS, RENORMALISED, QueryToken, sides
from core.data import resolve_dataset, sample_items
from core.encoding.capture import CAPTURE_MODES, CaptureMode, check_eager, num_heads, resolve_layers
from core.encoding.encoder import Encoder
from core.encoding.methods import Ensemble
from core.encoding.setting import EmbeddingSetting, model_setting
from core.models.adapters import read_metadata
from core.models.registry import DEFAULT_MODEL, load_model
from core.runtime.arguments import add_arguments, from_arguments, given, option
from core.runtime.device import DEVICE_HELP
from core.runtime.errors import ConfigError
from core.runtime.files import write_json
from core.runtime.measure import peak_rss_mb

log = logging.getLogger(__name__)

DEFAULT_TASK = "trec-fine"
REPORT_FILE = "attention_report.json"


@dataclass(frozen=True)
class AttentionReportConfig:
    """Everything one report run depends on; every field but ``setting`` and ``examples`` is a CLI option, and the
    setting's options come from :class:`EmbeddingSetting` (its ``--layer`` excepted: here ``--layer`` is the bars').

    ``setting`` is how the texts are embedded; ``None`` means the adapter's trained setting, else the recipe's
    (:meth:`EmbeddingSetting.resolve`, as every CLI and page builds it).
    """

    model: str = option(DEFAULT_MODEL, help="packaged name, local folder or hub id")
    adapter: str | None = option(None, help="LoRA adapter folder; without it only base shares")
    setting: EmbeddingSetting | None = None
    device: str = option("auto", help=DEVICE_HELP)
    task: str = option(DEFAULT_TASK, help="a local task, or a csv/jsonl/... file with a text column")
    split: Literal["test", "train"] = option("test", help="the task's split", choices=("test", "train"))
    n: int = option(500, help="texts sampled from the task")
    seed: int = option(0, help="seed of the sample and the bootstrap")
    out: str = option("report", help="folder the report and its figures are written to")
    token: QueryToken | None = option(None, help="query token (default: follows the pooling)", choices=QUERY_TOKENS)
    capture: CaptureMode = option("rows", help="capture the query rows only, or full maps", choices=CAPTURE_MODES)
    layer: int = option(-1, help="layer of the per-token bars and the attention-attribution agreement")
    head: int | None = option(None, help="head of the per-token bars (default: mean over heads)")
    examples: tuple[str, ...] | None = None  # texts for token bars (default: the paper's + 3 of the sample)
    bootstrap: int = option(2000, help="bootstrap resamples of the confidence intervals")
    bench_n: int = option(64, help="texts for the rows-vs-full speed comparison")
    attribution_n: int = option(8, help="corpus texts attributed (0 = none)")
    ig_steps: int = option(16, help="IG steps per path segment")
    ig_max_steps: int = option(256, help="cap on IG steps per attribution")

    def __post_init__(self) -> None:
        if self.setting is not None and not isinstance(self.setting, EmbeddingSetting):
            raise ConfigError(f"setting must be an EmbeddingSetting, not a {type(self.setting).__name__}.")
        if self.n < 2:
            raise ConfigError(f"--n must be at least 2 for paired statistics, got {self.n}.")
        for name in ("bootstrap", "bench_n", "attribution_n", "ig_steps", "ig_max_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 0, got {getattr(self, name)}.")


def _refuse_an_ensemble(setting: EmbeddingSetting) -> None:
    if isinstance(setting.parsed_method, Ensemble):
        raise ConfigError(
            f"--method {setting.method} averages several prompts, and attention follows one wrapped text: run "
            "--method plain with each --prompt, or use echo or tp."
        )


def sample_texts(texts: Sequence[str], n: int, seed: int) -> list[str]:
    """A seeded sample of ``n`` texts in corpus order (all of them if ``n`` >= their number)."""
    if n < 2:
        raise ConfigError(f"--n must be at least 2 for paired statistics, got {n}.")
    return sample_items(texts, n, seed)


def run_report(config: AttentionReportConfig) -> dict[str, Any]:
    """The whole report: capture, statistics, examples, attribution, figures; returns the JSON payload."""
    out_dir = Path(config.out)
    if config.setting is not None:
        _refuse_an_ensemble(config.setting)  # before the slow model load
    loaded = load_model(config.model, config.adapter, device=config.device)
    setting = config.setting if config.setting is not None else model_setting(loaded)
    _refuse_an_ensemble(setting)
    check_eager(loaded.backbone)
    layers = len(resolve_layers(loaded.backbone, None))
    heads = num_heads(loaded.backbone)
    if not -layers <= config.layer < layers:
        raise ConfigError(f"--layer {config.layer} is out of range: use 0..{layers - 1} or -{layers}..-1.")
    if config.head is not None and not 0 <= config.head < heads:
        raise ConfigError(f"--head {config.head} is out of range: this model has {heads} heads, so use 0..{heads - 1}.")
    encoder = Encoder(loaded, setting=setting, cache=False, precision="fp32")
    token: QueryToken = config.token or query_token_for(encoder.pooling)
    compared = sides(loaded.has_adapter)
    dataset = resolve_dataset(config.task, config.split)
    texts = sample_texts(dataset.texts, config.n, config.seed)
    examples = list(config.examples) if config.examples is not None else [PAPER_EXAMPLE, *texts[:3]]
    log.info(
        "%d texts of %s/%s; prompt %r; query token %s",
        len(texts), config.task, config.split, encoder.prompt.template, token,
    )  # fmt: skip

    captures = {
        label: capture_corpus(encoder, texts, use_adapter=use_adapter, mode=config.capture, token=token)
        for label, use_adapter in compared.items()
    }
    base = captures["base"]
    other: CaptureMode = "full" if config.capture == "rows" else "rows"
    bench_texts = texts[: max(2, min(config.bench_n, len(texts)))]
    bench = capture_corpus(encoder, bench_texts, use_adapter=False, mode=other, token=token)
    rates = {config.capture: base.texts_per_second, other: bench.texts_per_second}
    log.info("capture speed: rows %.1f texts/s, full %.1f texts/s", rates["rows"], rates["full"])

    report: dict[str, Any] = {
        "settings": {
            "model": config.model,
            "adapter": config.adapter,
            "prompt": encoder.prompt.template,
            "method": encoder.method.spec,
            "pooling": encoder.pooling,
            "setting": encoder.setting.to_dict(),
            "query_token": token,
            "task": config.task,
            "split": config.split,
            "n_texts": len(texts),
            "seed": config.seed,
            "capture_mode": config.capture,
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
        # Every category's share with a CI over the corpus (first_copy under echo, placeholder under tp).
        "shares_ci": {
            label: share_cis(capture, config.bootstrap, seed=config.seed) for label, capture in captures.items()
        },
    }
    if encoder.method.kind in METHOD_CATEGORIES:
        category = METHOD_CATEGORIES[encoder.method.kind]
        report["method_share"] = {
            "category": category,
            **{label: cis[category]["all_layers"] for label, cis in report["shares_ci"].items()},
        }
    if "adapter" in captures:
        report["adapter"] = summarise_base(captures["adapter"])
        report["shift"] = shift_report(base, captures["adapter"], n_boot=config.bootstrap, seed=config.seed)
    else:
        report["shift"] = None
        report["note"] = "No adapter given: base shares only, no shift is available."

    example_items = {
        label: capture_corpus(encoder, examples, use_adapter=use_adapter, token=token).items
        for label, use_adapter in compared.items()
    }
    report["examples"] = [
        {
            "text": text,
            **token_bars(
                example_items["base"][i],
                example_items["adapter"][i] if "adapter" in example_items else None,
                config.layer,
                config.head,
            ),
        }
        for i, text in enumerate(examples)
    ]

    if config.attribution_n > 0:
        report["attribution"] = _attribution(encoder, token, examples[0], texts, compared, config)

    made = plots.report_figures(report)
    report["figures"] = plots.write_figures(made, out_dir)
    report["speed"]["peak_rss_mb"] = round(peak_rss_mb(), 1)
    write_json(out_dir / REPORT_FILE, report)
    return report


def _attribution(
    encoder: Encoder,
    token: QueryToken,
    example: str,
    texts: Sequence[str],
    compared: dict[str, bool],
    config: AttentionReportConfig,
) -> dict[str, Any]:
    """Token shares of the example and ``attribution_n`` texts, one similarity pair, and their agreement."""
    attributor = Attributor(encoder, token=token, n_steps=config.ig_steps, max_steps=config.ig_max_steps)
    attr_texts = [example, *texts[: config.attribution_n]]
    out = {}
    for label, use_adapter in compared.items():
        started = time.perf_counter()
        shares = [attributor.token_shares(text, use_adapter=use_adapter) for text in attr_texts]
        attention = capture_corpus(encoder, attr_texts, use_adapter=use_adapter, token=token)
        similarity = attributor.similarity(example, _partner(example), use_adapter=use_adapter)
        agreement_data = agreement(attention.items, shares, layer=config.layer)
        seconds = time.perf_counter() - started
        out[label] = {
            "token_shares": [s.to_dict() for s in shares],
            "similarity": similarity.to_dict(),
            "agreement": agreement_data,
            "seconds": round(seconds, 1),
        }
        deltas = [s.relative_delta for s in shares] + [similarity.a.relative_delta, similarity.b.relative_delta]
        log.info(
            "attribution %s: %d texts + 1 pair in %.0fs; relative convergence delta max %.4f, steps used %s; "
            "Spearman attention vs attribution mean %s (pooled %s)",
            label, len(attr_texts), seconds, max(deltas), sorted({s.steps for s in shares}),
            agreement_data["mean_rho"], agreement_data["pooled_rho"],
        )  # fmt: skip
    return out


def _partner(text: str) -> str:
    return "a person is riding a bicycle" if text == PAPER_EXAMPLE else "a man is driving a car"


# ----- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analysis.attention", description=__doc__.splitlines()[0])
    add_arguments(parser, AttentionReportConfig)
    # The embedding's setting; its layer is the adapter's (or the final one): --layer above is the bars'.
    add_arguments(parser, EmbeddingSetting, exclude=("layer",))
    parser.add_argument("--examples", nargs="*", default=None, help="texts for token bars (default: paper's + 3)")
    return parser


def config_from_args(args: argparse.Namespace) -> AttentionReportConfig:
    """The config of the parsed options; the setting is the adapter's trained one with the user's choices."""
    trained = read_metadata(args.adapter) if args.adapter else None
    setting = EmbeddingSetting.resolve(trained, **given(EmbeddingSetting, args))
    examples = tuple(args.examples) if args.examples is not None else None
    return from_arguments(AttentionReportConfig, args, setting=setting, examples=examples)


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI: options -> ``AttentionReportConfig`` -> ``run_report``; prints the results' headline."""
    started = time.perf_counter()
    config = config_from_args(build_parser().parse_args(argv))
    report = run_report(config)
    speed = report["speed"]["texts_per_second"]
    print(f"capture speed: rows {speed['rows']:.1f} texts/s, full {speed['full']:.1f} texts/s")
    if report.get("note"):
        print(report["note"])
    if report.get("method_share"):
        share = report["method_share"]
        base_share = share["base"]
        print(
            f"{report['settings']['method']}: pooled token's share on {share['category']} (all layers, base) "
            f"{base_share['mean']:.4f} [{base_share['ci_low']:.4f}, {base_share['ci_high']:.4f}]"
        )
    shift = report.get("shift")
    if shift:
        top = shift["top_layers"][0]
        print(
            f"largest {shift['focus']} shift (renormalised, heads averaged): layer {top['layer']} "
            f"{top['shift']:+.4f} [{top['ci_low']:+.4f}, {top['ci_high']:+.4f}], d={top['cohens_d']:.2f}"
        )
    figures = report["figures"]
    png = "PNG written" if figures["png"] else f"PNG not written ({figures['png_error']}); HTML only"
    print(f"wrote {Path(config.out) / REPORT_FILE} and {len(figures['html'])} figures ({png})")
    print(f"total {time.perf_counter() - started:.0f}s, peak RSS {report['speed']['peak_rss_mb']:.0f} MB")
    return 0
