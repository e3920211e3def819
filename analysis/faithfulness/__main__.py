"""``python -m analysis.faithfulness``: the faithfulness report (``analysis.faithfulness.report``) as a command.

The CLI resolves what the library takes as given: the embedding setting, from the adapter's trained setting and
the options (at 128 tokens unless ``--max-length`` says otherwise), and the layer ``attention_peak`` reads, from
the committed attention report (:data:`ATTENTION_REPORT`) when ``--peak-layer`` is not given.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path

from analysis.categories import sides
from analysis.faithfulness.config import (
    REPORT_MAX_LENGTH,
    FaithfulnessConfig,
    peak_layer_from_report,
)
from analysis.faithfulness.report import REPORT_FILE, run_report
from core.encoding.setting import EmbeddingSetting
from core.models.adapters import read_metadata
from core.runtime.arguments import add_arguments, given
from core.runtime.errors import run_cli
from core.runtime.paths import REPO_ROOT

__all__ = ["ATTENTION_REPORT", "COMMITTED_ATTENTION_REPORT", "build_parser", "config_from_args", "main"]

# The attention report whose peak-shift layer attention_peak reads by default (when it is the model's).
COMMITTED_ATTENTION_REPORT = "results/attention/attention_report.json"
ATTENTION_REPORT = REPO_ROOT / COMMITTED_ATTENTION_REPORT
# Options taking several values, space-separated as before (``--tasks a b``); a comma-separated list works too.
_SEVERAL = ("tasks", "methods")


def _help(config: type, name: str) -> str:
    return next(f for f in dataclasses.fields(config) if f.name == name).metadata["help"]


def build_parser() -> argparse.ArgumentParser:
    """The CLI's options, from :class:`FaithfulnessConfig`'s and :class:`EmbeddingSetting`'s fields."""
    defaults = FaithfulnessConfig()
    parser = argparse.ArgumentParser(
        prog="python -m analysis.faithfulness",
        description="Which explanation to trust: deletion and insertion faithfulness of attention and attribution, "
        "base and adapter.",
        epilog="--prompt, --pooling and --layer default to the adapter's trained setting, else the shipped recipe.",
    )
    add_arguments(parser, FaithfulnessConfig, exclude=(*_SEVERAL, "peak_layer"))
    for name in _SEVERAL:
        default = "all" if name == "methods" else ",".join(getattr(defaults, name))
        parser.add_argument(f"--{name}", nargs="+", default=None, help=f"{_help(FaithfulnessConfig, name)} "
                            f"(default: {default})")  # fmt: skip
    parser.add_argument(
        "--peak-layer",
        type=int,
        default=None,
        help=f"{_help(FaithfulnessConfig, 'peak_layer')} (default: the peak-shift layer of the committed attention "
        f"report {COMMITTED_ATTENTION_REPORT} when it is this model's, else the last layer)",
    )
    add_arguments(parser, EmbeddingSetting, exclude=("method", "max_length"))
    parser.add_argument(
        "--max-length", type=int, default=None,
        help=f"{_help(EmbeddingSetting, 'max_length')} (default: {REPORT_MAX_LENGTH})",
    )  # fmt: skip
    return parser


def _several(values: Sequence[str]) -> tuple[str, ...]:
    return tuple(part.strip() for value in values for part in value.split(",") if part.strip())


def config_from_args(args: argparse.Namespace) -> FaithfulnessConfig:
    """The config the options describe, with the embedding resolved against the adapter's trained setting and the
    peak layer read from :data:`ATTENTION_REPORT` unless given."""
    values = given(FaithfulnessConfig, args)
    for name in _SEVERAL:
        if name in values:
            values[name] = _several(values[name])
    trained = read_metadata(args.adapter) if args.adapter else None
    values["embedding"] = EmbeddingSetting.resolve(
        trained,
        method="plain",
        prompt=args.prompt,
        pooling=args.pooling,
        layer=args.layer,
        max_length=args.max_length if args.max_length is not None else REPORT_MAX_LENGTH,
    )
    if values.get("peak_layer") is None:
        values["peak_layer"] = peak_layer_from_report(ATTENTION_REPORT, values.get("model", FaithfulnessConfig.model))
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
    print(
        f"CPU {speed['total_cpu_seconds']:.0f} s = {speed['total_in_sample_encodes_cpu']:.0f}x the sample encode's "
        f"{speed['sample_encode_cpu_seconds']:.0f} s CPU"
    )
    print(
        f"token-passes {speed['token_passes']:,} ({speed['token_passes'] / max(speed['sample_token_passes'], 1):.1f}x "
        f"the sample encode's {speed['sample_token_passes']:,}), "
        f"prefix reuse {'on' if speed['prefix_reuse'] else 'off'}"
    )
    print(f"wrote {Path(config.out) / REPORT_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
