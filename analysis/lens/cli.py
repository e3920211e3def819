"""The lens report's command line: options from :class:`analysis.lens.report.LensConfig`, then a headline."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from analysis.lens.report import LensConfig, run_report
from core.runtime.arguments import add_arguments, from_arguments

__all__ = ["build_parser", "headline", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m analysis.lens",
        description="Vocabulary lens, layer profile and geometry of fine-tuning, base vs adapter.",
    )
    add_arguments(parser, LensConfig)
    return parser


def headline(report: dict[str, Any]) -> list[str]:
    """A few lines with the answers: alignment at the final layer, the best layer, the CKA."""
    lines = []
    lens = report.get("lens")
    if lens:
        for view, section in lens["views"].items():
            parts = []
            for variant in ("base", "adapter"):
                if variant in section:
                    rate = section[variant]["hit_rate"]
                    parts.append(
                        f"{variant} {rate['mean'][-1]:.3f} [{rate['ci_low'][-1]:.3f}, {rate['ci_high'][-1]:.3f}]"
                    )
            lines.append(f"final-layer key-token hit rate ({view}): " + ", ".join(parts))
        for variant, tokens in lens["final_top_tokens"].items():
            lines.append(f"{variant} top-1 tokens: " + ", ".join(f"{t['token']!r}x{t['count']}" for t in tokens[:8]))
    for task, profile in report.get("profiles", {}).items():
        for variant, section in profile["variants"].items():
            best = section.get("best")
            if best:
                lines.append(f"{task} best {variant}: {best['pooling']} layer {best['layer']} "
                             f"V={best['v_measure']:.4f} ± {best['v_measure_std']:.4f}")  # fmt: skip
    geometry = report.get("geometry")
    if geometry:
        lines.append(f"first layer the LoRA changed (CKA CI below 0.999): {geometry['cka_first_changed_layer']}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Options -> ``LensConfig`` -> ``run_report``; prints where the report went and its headline."""
    args = build_parser().parse_args(argv)
    config = from_arguments(LensConfig, args)
    report = run_report(config)
    print(f"report: {config.out}/{config.name}/report.json")
    for line in headline(report):
        print(line)
    seconds, passes = report["timings_seconds"]["total"], report["token_passes"]
    print(f"{seconds:.0f} s, token-passes {passes:,} (tokens the decoder ran)")
    return 0
