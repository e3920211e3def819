"""``python -m core.embed``: embed a file of texts into a .npy matrix, in chunks, resumably, on any device.

Input: ``.txt`` (one text per line), ``.csv``/``.tsv``/``.jsonl``/``.parquet`` (a text column,
``--text-column``), read a chunk at a time through ``core.data.user_files`` (``.json`` is read whole).
Output: float32 ``(n, dim)`` assembled from per-chunk shards (kept under the cache root until then) and
written atomically, plus a sidecar JSON with the settings that produced it (``setting``: the full
EmbeddingSetting). A killed run, rerun with the same command, embeds only the missing chunks. Under
``torchrun --nproc_per_node=N -m core.embed ...`` the chunks are split across the processes and rank 0 assembles
them in input order.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from contextlib import closing
from pathlib import Path
from typing import Any

from core.data.user_files import iter_texts
from core.encoding.encoder import Encoder
from core.encoding.methods import Ensemble, parse_method
from core.encoding.setting import EmbeddingSetting, pooling_note
from core.encoding.streaming import DEFAULT_CHUNK_TEXTS, embed_stream
from core.models.registry import DEFAULT_MODEL, TRUST_REMOTE_CODE_ENV, model_for
from core.runtime.arguments import add_arguments, given
from core.runtime.device import DEVICE_HELP, PRECISIONS
from core.runtime.distributed import barrier, close_distributed, dist_info, init_distributed
from core.runtime.errors import ConfigError, StorageError, UserFileError, run_cli
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


def check_cache_root() -> None:
    """Fail before the work if the cache root (shards, the lock) cannot be created or written, naming the fix."""
    from core.runtime.paths import cache_root

    try:
        root = cache_root()
        with tempfile.TemporaryFile(dir=root):
            pass
    except OSError as error:
        where = os.environ.get("EMBEDDING_LENS_HOME") or "~/.cache/embedding-lens"
        raise StorageError(
            f"cannot write the cache folder {where} ({error.strerror or error}); core.embed keeps its finished "
            "chunks there until the output is whole. Make it writable, or set EMBEDDING_LENS_HOME to a writable "
            "folder."
        ) from None


def check_sidecar(output: Path, input_path: Path) -> Path:
    """The settings file written beside ``output`` (``NAME.json``); refused before the work if that name is the
    input or a file no core.embed run wrote (it would be overwritten)."""
    sidecar = output.with_suffix(".json")
    if sidecar.exists() and sidecar.resolve() == input_path.resolve():
        raise ConfigError(
            f"--output {output} would write its settings to {sidecar}, which is your --input; "
            "choose another --output name (e.g. vectors.npy)."
        )
    if sidecar.exists() and not _is_sidecar(sidecar):
        raise ConfigError(
            f"--output {output} would write its settings to {sidecar}, a file core.embed did not write; "
            "choose another --output name, or move that file."
        )
    return sidecar


def _is_sidecar(path: Path) -> bool:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and {"method_spec", "shape", "input"} <= record.keys()


def method_from_args(method: str | None, prompts: str | None) -> str | None:
    """``--method`` (a spec such as ``tp:1-6``; None: not given) and, for ``ensemble``, ``--prompts a,b,c``."""
    if prompts is not None:
        if (method or "").strip().lower() != "ensemble":
            raise ConfigError(f"--prompts lists an ensemble's prompts: use it with --method ensemble, not {method!r}.")
        return Ensemble(tuple(prompt.strip() for prompt in prompts.split(",") if prompt.strip())).spec
    return parse_method(method).spec if method is not None else None


def setting_choices(args: argparse.Namespace) -> dict[str, Any]:
    """The embedding setting's fields the user gave (``--method ensemble --prompts a,b`` as one method spec)."""
    return {**given(EmbeddingSetting, args), "method": method_from_args(args.method, args.prompts)}


def load_encoder(args: argparse.Namespace) -> Encoder:
    """The encoder for the parsed options: the adapter's trained setting (or the recipe's) with the user's choices."""
    return Encoder(
        model_for(args.model, args.adapter),
        args.adapter,
        **setting_choices(args),
        precision=args.precision,
        cache=not args.no_cache,
        device=args.device,
    )


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core.embed", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", help=f"packaged name, local folder or hub id (default: the adapter's base model, or {DEFAULT_MODEL})"
    )
    parser.add_argument(
        "--adapter", default=None, help="LoRA adapter folder (peft); its trained setting is the default"
    )
    parser.add_argument("--base", action="store_true", help="with --adapter: embed with the base weights")
    add_arguments(parser, EmbeddingSetting)
    parser.add_argument("--prompts", help="with --method ensemble: prompt names or templates, comma-separated")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS)
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument("--normalize", action="store_true", help="L2-normalise the vectors")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run a model folder's own Python code (config auto_map); only for a folder whose author you trust",
    )
    parser.add_argument("--input", required=True, type=Path)
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--output", required=True, type=Path, help="a .npy file")
    parser.add_argument(
        "--chunk-size", type=int, default=DEFAULT_CHUNK_TEXTS, help="texts per chunk (memory is bounded by one chunk)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.output.suffix != ".npy":
        parser.error(f"--output must end in .npy, got {args.output}")
    if args.chunk_size < 1:
        parser.error(f"--chunk-size must be at least 1, got {args.chunk_size}")
    if args.trust_remote_code:  # read by core.models.registry.load_model wherever the model is loaded
        os.environ[TRUST_REMOTE_CODE_ENV] = "1"
    check_input(args.input)
    check_output(args.output)
    sidecar = check_sidecar(args.output, args.input)
    check_cache_root()
    method_from_args(args.method, args.prompts)  # a bad method fails before the input is read
    with closing(iter_texts(args.input, args.text_column)) as texts:
        next(texts)  # a bad input fails here, before the slow model load
    init_distributed()
    try:
        rank, world = dist_info()
        encoder = load_encoder(args)
        started, started_cpu = time.perf_counter(), time.process_time()
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
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - started_cpu
        barrier()  # no rank closes its connections while a peer still reads the last exchange: gloo aborts that peer
    finally:
        close_distributed()
    if rank != 0 or result.shape is None:
        return 0
    write_json(
        sidecar,
        {
            **encoder.settings(encoder.prompt, encoder.plan().poolings[0], use_adapter=not args.base),
            "method_spec": encoder.method.spec,
            "setting": encoder.setting.to_dict(),
            "pooling_note": pooling_note(encoder.method.spec, getattr(encoder.prompt, "name", None), encoder.pooling),
            "input": str(args.input),
            "texts": result.shape[0],
            "truncated": result.truncated,
            "normalized": args.normalize,
            "shape": list(result.shape),
            "seconds": round(seconds, 2),
            "cpu_seconds": round(cpu_seconds, 2),
            "processes": world,
            "device": str(encoder.device),
        },
    )
    print(f"wrote {args.output} {result.shape} in {seconds:.1f} s ({world} process(es), {encoder.device})")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
