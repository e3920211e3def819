"""``python -m core.embed``: embed a file of texts into a .npy matrix, in chunks, resumably, on any device.

Input: ``.txt`` (one text per line), ``.csv``/``.tsv``/``.jsonl``/``.parquet`` (a text column,
``--text-column``), read a chunk at a time through ``core.data.user_files`` (``.json`` is read whole).
Output: float32 ``(n, dim)`` assembled from per-chunk shards (kept under the cache root until then) and
written atomically, plus a sidecar JSON with the settings that produced it. A killed run, rerun with the
same command, embeds only the missing chunks. Under ``torchrun --nproc_per_node=N -m core.embed ...`` the
chunks are split across the processes and rank 0 assembles them in input order.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from contextlib import closing
from pathlib import Path

from core.data.user_files import iter_texts
from core.encoding.encoder import Encoder
from core.encoding.methods import METHOD_KINDS, Ensemble, Method, parse_method
from core.encoding.pooling import POOLING_MODES
from core.encoding.prompts import PROMPTS
from core.encoding.setting import pooling_note
from core.encoding.streaming import DEFAULT_CHUNK_TEXTS, embed_stream
from core.models.registry import DEFAULT_MODEL
from core.runtime.device import DEVICE_HELP, PRECISIONS
from core.runtime.distributed import close_distributed, dist_info, init_distributed
from core.runtime.errors import ConfigError, UserFileError, run_cli
from core.runtime.files import write_json


def check_input(path: Path) -> None:
    if not path.is_file():
        raise UserFileError(f"Input file {path} does not exist; check the --input path.")


def check_output(output: Path) -> None:
    """Fail before the work if the vectors could not be written after it (a missing folder is created)."""
    folder = output.parent
    if output.is_dir():
        raise ConfigError(f"--output {output} is a folder; name a .npy file inside it, e.g. {output / 'vectors.npy'}.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise ConfigError(
            f"cannot write --output {output}: the folder {folder} cannot be created or written "
            f"({error.strerror or error}); choose a writable folder or fix its permissions."
        ) from None


def method_from_args(method: str, prompts: str | None) -> Method:
    """``--method`` (a spec such as ``tp:1-6``) and, for ``ensemble``, ``--prompts a,b,c``."""
    if prompts is not None:
        if method.strip().lower() != "ensemble":
            raise ConfigError(f"--prompts lists an ensemble's prompts: use it with --method ensemble, not {method!r}.")
        return Ensemble(tuple(prompt.strip() for prompt in prompts.split(",") if prompt.strip()))
    return parse_method(method)


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
    parser.add_argument(
        "--method",
        default="plain",
        help=f"one of {', '.join(METHOD_KINDS)}; tp:START-EXIT sets token prepending's layers (default: plain)",
    )
    parser.add_argument("--prompts", help="with --method ensemble: prompt names or templates, comma-separated")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--precision", default="auto", choices=PRECISIONS)
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
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
    if args.chunk_size < 1:
        parser.error(f"--chunk-size must be at least 1, got {args.chunk_size}")
    check_input(args.input)
    check_output(args.output)
    method = method_from_args(args.method, args.prompts)
    with closing(iter_texts(args.input, args.text_column)) as texts:
        next(texts)  # a bad input fails here, before the slow model load
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
            method=method,
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
            "method_spec": encoder.method.spec,
            "pooling_note": pooling_note(encoder.method.spec, getattr(encoder.prompt, "name", None), encoder.pooling),
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
