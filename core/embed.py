"""``python -m core.embed``: embed a file of texts into a .npy matrix, in chunks, resumably, on any device.

Input: ``.txt`` (one text per line), ``.csv``/``.tsv``/``.jsonl``/``.parquet`` (a text column,
``--text-column``), read one chunk at a time (``.json`` is read whole). Output: float32 ``(n, dim)``
assembled from per-chunk shards and written atomically, plus a sidecar JSON with the settings that
produced it. A killed run, rerun with the same command, embeds only the missing chunks. Under
``torchrun --nproc_per_node=N -m core.embed ...`` the chunks are split across the processes and rank 0
assembles them in input order.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from core.device import DEVICE_CHOICES, PRECISIONS
from core.distributed import close_distributed, dist_info, init_distributed
from core.encoder import Encoder
from core.errors import run_cli
from core.files import write_json
from core.models import DEFAULT_MODEL
from core.pooling import POOLING_MODES
from core.prompts import PROMPTS
from core.streaming import DEFAULT_CHUNK_TEXTS, embed_stream


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.embed", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="packaged name, local folder or hub id")
    parser.add_argument("--adapter", default=None, help="LoRA adapter folder (peft)")
    parser.add_argument("--base", action="store_true", help="with --adapter: embed with the base weights")
    parser.add_argument(
        "--prompt", help=f"one of {', '.join(PROMPTS)} or a template with {{text}} (default: none, or the adapter's)"
    )
    parser.add_argument("--pooling", choices=POOLING_MODES, help="default: mean, or the adapter's")
    parser.add_argument("--layer", help="hidden-state index (-1 = last) or lastK for a mean (default: -1)")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--precision", default="auto", choices=PRECISIONS)
    parser.add_argument(
        "--device", default="auto", help=f"{', '.join(DEVICE_CHOICES)} or cuda:N (auto: CUDA, then MPS, then CPU)"
    )
    parser.add_argument("--normalize", action="store_true", help="L2-normalise the vectors")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")
    parser.add_argument("--input", required=True, type=Path)
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--output", required=True, type=Path, help="a .npy file")
    parser.add_argument(
        "--chunk-size", type=int, default=DEFAULT_CHUNK_TEXTS, help="texts per chunk (memory is bounded by one chunk)"
    )
    args = parser.parse_args(argv)
    if args.output.suffix != ".npy":
        parser.error(f"--output must end in .npy, got {args.output}")
    init_distributed()
    try:
        rank, world = dist_info()
        encoder = Encoder(
            args.model,
            args.adapter,
            prompt=args.prompt,
            pooling=args.pooling,
            layer=args.layer,
            precision=args.precision,
            max_length=args.max_length,
            cache=not args.no_cache,
            device=args.device,
        )
        started = time.perf_counter()
        result = embed_stream(
            encoder,
            args.input,
            args.output,
            text_column=args.text_column,
            chunk_size=args.chunk_size,
            normalize=args.normalize,
            use_adapter=False if args.base else None,
            show_progress=True,
        )
        seconds = time.perf_counter() - started
    finally:
        close_distributed()
    if rank != 0 or result.shape is None:
        return 0
    write_json(
        args.output.with_suffix(".json"),
        {
            **encoder.settings(encoder.prompt, encoder.plan().poolings[0], use_adapter=not args.base),
            "input": str(args.input),
            "texts": result.shape[0],
            "truncated": result.truncated,
            "normalized": args.normalize,
            "shape": list(result.shape),
            "seconds": round(seconds, 2),
            "processes": world,
            "device": str(encoder.device),
        },
    )
    print(f"wrote {args.output} {result.shape} in {seconds:.1f} s ({world} process(es), {encoder.device})")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
