"""``python -m core.embed``: embed a file of texts into a .npy matrix.

Input: ``.txt`` (one text per line), ``.csv``/``.tsv``/``.jsonl``/``.json``/``.parquet`` (a text
column, ``--text-column``). Output: float32 ``(n, dim)`` written atomically, plus a sidecar JSON
with the settings that produced it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from core.data import load_user_file
from core.encoder import Encoder
from core.errors import ConfigError, UserFileError, run_cli
from core.files import atomic_write, write_json
from core.methods import METHOD_KINDS, Ensemble, Method, parse_method
from core.models import DEFAULT_MODEL
from core.pooling import POOLING_MODES
from core.prompts import PROMPTS


def read_texts(path: Path, text_column: str) -> list[str]:
    if not path.is_file():
        raise UserFileError(f"Input file {path} does not exist; check the --input path.")
    if path.suffix == ".txt":
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as error:
            raise UserFileError(f"{path} is not UTF-8 text (byte {error.start}); convert it to UTF-8.") from None
        texts = [line for line in lines if line.strip()]
        if not texts:
            raise UserFileError(f"{path} has no non-empty lines; give it one text per line.")
        return texts
    return load_user_file(path, text_column=text_column, label_column=None).texts


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
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--normalize", action="store_true", help="L2-normalise the vectors")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")
    parser.add_argument("--input", required=True, type=Path)
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--output", required=True, type=Path, help="a .npy file")
    args = parser.parse_args(argv)
    if args.output.suffix != ".npy":
        parser.error(f"--output must end in .npy, got {args.output}")
    check_output(args.output)
    method = method_from_args(args.method, args.prompts)
    texts = read_texts(args.input, args.text_column)
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
    )
    started = time.perf_counter()
    vectors = encoder.encode(
        texts, normalize=args.normalize, use_adapter=False if args.base else None, show_progress=True
    )
    seconds = time.perf_counter() - started
    with atomic_write(args.output, "wb") as handle:
        np.save(handle, vectors)
    write_json(
        args.output.with_suffix(".json"),
        {
            **encoder.settings(encoder.prompt, encoder.plan().poolings[0], use_adapter=not args.base),
            "method_spec": encoder.method.spec,
            "input": str(args.input),
            "texts": len(texts),
            "truncated": encoder.last_truncated,
            "normalized": args.normalize,
            "shape": list(vectors.shape),
            "seconds": round(seconds, 2),
        },
    )
    print(f"wrote {args.output} {vectors.shape} in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
