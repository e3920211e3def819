"""``python -m analysis.clustering``: the grid's command line (options documented in the package docstring)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import analysis.clustering as package
from analysis.clustering.grid import PRESETS, GridConfig, parse_model_specs
from analysis.clustering.runner import run_grid
from analysis.clustering.summary import summary_tables
from core.metrics import DEFAULT_KMEANS_SEEDS
from core.runtime.device import DEVICE_HELP, PRECISIONS
from core.runtime.distributed import barrier, close_distributed, dist_info, init_distributed
from core.runtime.errors import run_cli


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
        device=args.device,
        normalize=args.normalize,
        baseline=not args.no_baseline,
        cache=not args.no_cache,
        progress=not args.quiet,
        methods=_split(args.methods) or ["plain"],
    )


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m analysis.clustering",
        description="MTEB-style clustering grid: models/adapters x prompts x poolings x layers x tasks.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(package.__doc__ or "").split("\n\n", 1)[1],
    )
    parser.add_argument(
        "--preset", choices=sorted(PRESETS), default="default", help="grid whose values fill any option not given"
    )
    parser.add_argument("--models", help="comma-separated: NAME, NAME+ADAPTER_DIR, or ADAPTER_DIR")
    parser.add_argument("--prompts", help="comma-separated prompt names (none, eol, cluster, summarize, ...)")
    parser.add_argument("--template", action="append", help="a custom prompt template with one {text} (repeatable)")
    parser.add_argument(
        "--methods",
        help="comma-separated methods (default plain): plain, echo, tp or tp:START-EXIT, metaeol, "
        "ensemble:P1+P2 (prompts joined by '+'); --prompts apply to plain, the others bring their own templates",
    )
    parser.add_argument("--poolings", help="comma-separated: mean, last, eos, weighted, attention, text_mean")
    parser.add_argument("--layers", help="comma-separated layers: -1, 0, 12, last4 ...")
    parser.add_argument("--tasks", help="comma-separated: local, a local task, PATH[:TEXT[:LABEL]], or an mteb task")
    parser.add_argument("--out", required=True, help="output folder (cells/, summary.md/.csv/.html)")
    parser.add_argument("--kmeans-seeds", help=f"comma-separated k-means seeds (default {DEFAULT_KMEANS_SEEDS})")
    parser.add_argument("--max-texts", type=int, help="cap every task's sample at this many texts")
    parser.add_argument("--max-length", type=int, help="max tokens per text for every task (default: per task)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto")
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument("--normalize", action="store_true", help="L2-normalise vectors before k-means")
    parser.add_argument("--no-baseline", action="store_true", help="leave out the MiniLM baseline row")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m analysis.clustering``; also under ``torchrun --nproc_per_node=N -m analysis.clustering``."""
    config = build_config(make_parser().parse_args(argv))
    init_distributed()
    try:
        result = run_grid(config)
        rank, _world = dist_info()
        barrier()  # no rank closes its connections while a peer still reads the last gather: gloo aborts that peer
    finally:
        close_distributed()
    if rank != 0:  # rank 0 prints the merged result
        return 2 if result.errors else 0
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
