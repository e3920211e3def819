"""``python -m core.bench --peers``: the engine against llm2vec 0.2.3 and sentence-transformers, whole processes.

Each contestant embeds the same texts from the same model folder (mean pooling, no prompt, fp32) as a process of
its own, start-up and model load included, in turn A B C A B C for ``--rounds`` rounds on each text count:

- ``engine``: ``python -m core.embed --prompt none --pooling mean --precision fp32 --no-cache`` (the command users
  run); its sidecar gives the encode's wall and CPU seconds.
- ``llm2vec``: ``LLM2Vec.from_pretrained(..., enable_bidirectional=False, pooling_mode="mean")`` (causal mode) and
  ``encode(batch_size=32)``, in its own virtual environment (:func:`ensure_peer_venv`: llm2vec pins transformers
  4.44, this project runs 5.x). That transformers cannot read a folder written by transformers 5 (tokenizer class,
  merges format, ``rope_parameters``), so it reads an old-format copy (:func:`write_old_format_copy`) whose weights
  are a link to the same file.
- ``sentence-transformers``: a ``Transformer`` module pinned to plain text (no chat template) + mean ``Pooling`` over
  the same folder, ``encode(batch_size=32)``, in this environment.

Prints, per text count, each contestant's whole-process and encode-only CPU and wall seconds (min/median/max), the
peer/engine ratios per round (above 1: the engine is ahead) and the vectors' cosine agreement with the engine's.
The peers' workers run this file as a script (``--worker``): its top-level imports are the standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "CONTESTANTS",
    "PEER_PINS",
    "RESULT_PREFIX",
    "Run",
    "agreement",
    "ensure_peer_venv",
    "main",
    "parse_result",
    "peer_texts",
    "ratio_table",
    "run_table",
    "write_old_format_copy",
]

Contestant = Literal["engine", "llm2vec", "sentence-transformers"]
CONTESTANTS: tuple[Contestant, ...] = ("engine", "llm2vec", "sentence-transformers")
# llm2vec 0.2.3 and what its code imports, at versions that work together; torch, numpy, safetensors, accelerate and
# the rest come from this project's environment through a .pth line (no second multi-GB torch).
PEER_PINS = ("llm2vec==0.2.3", "transformers==4.44.2", "tokenizers==0.19.1", "huggingface-hub==0.24.7", "peft==0.12.0")
PEER_BATCH_SIZE = 32  # both peers' default encode batch
RESULT_PREFIX = "PEER-RESULT "
# Keys of tokenizer_config.json that only transformers 5 writes or understands.
NEW_TOKENIZER_KEYS = ("backend", "is_local", "local_files_only", "tokenizer_class")


@dataclass(frozen=True)
class Run:
    """One contestant's process on one text count: whole-process and encode-only seconds (start-up = the rest)."""

    contestant: str
    texts: int
    round: int
    wall: float
    cpu: float
    encode_wall: float
    encode_cpu: float
    peak_rss_mb: float = 0.0

    def __post_init__(self) -> None:
        if min(self.wall, self.cpu, self.encode_wall, self.encode_cpu) < 0:
            raise ValueError(f"negative seconds in {self}")

    def figure(self, name: str) -> float:
        """``wall``, ``cpu``, ``encode_wall``, ``encode_cpu``, ``startup_wall`` or ``startup_cpu``."""
        if name.startswith("startup_"):
            kind = name.removeprefix("startup_")
            return max(0.0, getattr(self, kind) - getattr(self, f"encode_{kind}"))
        return float(getattr(self, name))


# ----- the workers (run by a peer's own interpreter: standard library at the top, the peer imported inside)
def _read_texts(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _worker(kind: str, folder: str, texts_path: Path, output: Path, batch_size: int) -> int:
    texts = _read_texts(texts_path)
    import numpy as np
    import torch

    if kind == "llm2vec":
        from llm2vec import LLM2Vec

        model = LLM2Vec.from_pretrained(
            folder, enable_bidirectional=False, pooling_mode="mean", max_length=512, torch_dtype=torch.float32
        )
        encode = lambda: model.encode(texts, batch_size=batch_size, show_progress_bar=False, convert_to_numpy=True)  # noqa: E731
    elif kind == "sentence-transformers":
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

        # Pinned to plain text: by default an instruct model's text is wrapped in its chat template.
        plain = {"text": {"method": "forward", "method_output_name": "last_hidden_state"}}
        transformer = Transformer(folder, modality_config=plain, module_output_name="token_embeddings")
        pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
        model = SentenceTransformer(modules=[transformer, pooling], device="cpu")
        encode = lambda: model.encode(texts, batch_size=batch_size, convert_to_numpy=True)  # noqa: E731
    else:
        raise SystemExit(f"unknown worker {kind!r}")
    wall, cpu = time.perf_counter(), time.process_time()
    with torch.no_grad():
        vectors = np.asarray(encode(), dtype=np.float32)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    np.save(output, vectors)
    print(RESULT_PREFIX + json.dumps({"encode_wall": wall, "encode_cpu": cpu, "shape": list(vectors.shape)}))
    return 0


def parse_result(stdout: str) -> dict[str, Any]:
    """The worker's result line (the last ``PEER-RESULT {json}`` line of its output).

    Raises:
        RuntimeError: no such line (the worker stopped before writing it), shown with the output's end.
    """
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            record = json.loads(line[len(RESULT_PREFIX) :])
            if not {"encode_wall", "encode_cpu"} <= record.keys():
                raise RuntimeError(f"the worker's result lacks encode seconds: {line!r}")
            return record
    raise RuntimeError("the worker printed no result line; its output ends with:\n" + stdout[-2000:])


# ----- the peer's environment and its copy of the model folder
def peer_venv_dir() -> Path:
    from core.runtime.paths import cache_root

    return cache_root() / "peers" / ("llm2vec-" + "-".join(pin.split("==")[1] for pin in PEER_PINS[:2]))


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_peer_venv(venv: Path | None = None, *, log=print) -> Path:
    """llm2vec's virtual environment (created on demand from PyPI with :data:`PEER_PINS`); returns its Python.

    Built under a temporary name and renamed into place when complete, so an interrupted build is never used.
    The pins are installed without dependencies first; only then is this environment's site-packages appended
    to the peer's path (a .pth line), so pip never sees, nor uninstalls, this project's packages.
    """
    import sysconfig

    from core.runtime.errors import ConfigError
    from core.runtime.files import staging_folder

    venv = venv or peer_venv_dir()
    marker = venv / "embedding-lens-peer.json"
    if marker.is_file():
        return _venv_python(venv)
    if venv.exists():
        raise ConfigError(f"{venv} exists but is not a complete peer environment; remove it and run again.")
    venv.parent.mkdir(parents=True, exist_ok=True)
    base = getattr(sys, "_base_executable", sys.executable)
    log(f"creating llm2vec's environment in {venv} ({', '.join(PEER_PINS)}) ...")
    with staging_folder(venv.parent, f".{venv.name}.") as staging:
        subprocess.run([base, "-m", "venv", "--without-pip", str(staging)], check=True)
        python = _venv_python(staging)
        pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--quiet", *PEER_PINS]
        done = subprocess.run(pip, capture_output=True, text=True)
        if done.returncode != 0:
            raise ConfigError(
                f"pip could not install {', '.join(PEER_PINS)} into the peer environment (PyPI reachable?):\n"
                + done.stderr[-1500:]
            )
        site = subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        Path(site, "zz-embedding-lens-main.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
        (staging / marker.name).write_text(json.dumps({"pins": list(PEER_PINS), "base": base}) + "\n")
        staging.rename(venv)
    return _venv_python(venv)


def write_old_format_copy(source: str | Path, target: str | Path) -> Path:
    """A copy of a transformers-5 model folder that transformers 4.4x reads; weights linked, not copied.

    - ``config.json``: ``rope_theta`` (and ``rope_scaling``) from ``rope_parameters`` (4.4x silently falls back to
      10000 without it), ``torch_dtype`` from ``dtype``.
    - ``tokenizer.json``: BPE merges as ``"a b"`` strings instead of pairs.
    - ``tokenizer_config.json``: a ``PreTrainedTokenizerFast`` with only ``input_ids`` and ``attention_mask`` as
      model inputs (4.4x's default adds ``token_type_ids``, which a Llama model refuses).

    Built in a staging folder and renamed to ``target`` (which must not exist): nothing the caller did not make is
    overwritten.

    Raises:
        ConfigError: ``target`` exists, the source lacks a file, or a merge holds a space (not expressible).
    """
    from core.runtime.errors import ConfigError
    from core.runtime.files import staging_folder

    source, target = Path(source), Path(target)
    if target.exists():
        raise ConfigError(f"{target} already exists; remove it or choose another folder for the old-format copy.")
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        if not (source / name).is_file():
            raise ConfigError(f"{source} has no {name}; the old-format copy needs a transformers model folder.")
    weights = sorted(p for p in source.iterdir() if p.suffix == ".safetensors" or p.name.endswith(".index.json"))
    if not any(p.suffix == ".safetensors" for p in weights):
        raise ConfigError(f"{source} has no .safetensors weights to link to.")
    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    rope = config.get("rope_parameters") or {}
    if "rope_theta" in rope and "rope_theta" not in config:
        config["rope_theta"] = rope["rope_theta"]
        if rope.get("rope_type", "default") != "default":
            config["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
    config.setdefault("torch_dtype", config.get("dtype", "float32"))
    tokenizer = json.loads((source / "tokenizer.json").read_text(encoding="utf-8"))
    merges = tokenizer.get("model", {}).get("merges")
    if isinstance(merges, list):
        if any(isinstance(m, list) and any(" " in part for part in m) for m in merges):
            raise ConfigError(f"{source}/tokenizer.json has a merge with a space, which the old format cannot hold.")
        tokenizer["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m for m in merges]
    settings = json.loads((source / "tokenizer_config.json").read_text(encoding="utf-8"))
    settings = {k: v for k, v in settings.items() if k not in NEW_TOKENIZER_KEYS}
    settings.update(
        tokenizer_class="PreTrainedTokenizerFast",
        model_input_names=["input_ids", "attention_mask"],
        clean_up_tokenization_spaces=False,
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    with staging_folder(target.parent, f".{target.name}.") as staging:
        for name, payload in (
            ("config.json", config),
            ("tokenizer.json", tokenizer),
            ("tokenizer_config.json", settings),
        ):
            (staging / name).write_text(json.dumps(payload, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        for path in weights:
            (staging / path.name).symlink_to(path.resolve())
        staging.rename(target)
    return target


def old_format_folder(source: Path) -> Path:
    """The cached old-format copy of ``source`` (made once per folder and weights; see write_old_format_copy)."""
    import hashlib

    from core.runtime.paths import cache_root

    stamp = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(source.iterdir()) if p.is_file()]
    key = hashlib.sha256(json.dumps([str(source.resolve()), stamp]).encode()).hexdigest()[:12]
    target = cache_root() / "peers" / "old-format" / f"{source.name}-{key}"
    return target if target.is_dir() else write_old_format_copy(source, target)


def peer_texts(n: int, seed: int = 0) -> list[str]:
    """``n`` texts of mixed length (up to 120 words, on one line each) from four packaged tasks, shuffled."""
    import random

    from core.data import load_task

    rng = random.Random(seed)
    sources = ("trec-fine", "20ng-s2s", "r8", "20ng-p2p")
    texts: list[str] = []
    for index, task in enumerate(sources):
        take = n // len(sources) + (1 if index < n % len(sources) else 0)
        texts += [" ".join(text.split()[:120]) for text in rng.sample(load_task(task).texts, take)]
    rng.shuffle(texts)
    return texts


# ----- running and timing the contestants
def _timed_process(command: list[str], env: dict[str, str]) -> tuple[str, float, float, float]:
    """(stdout, wall seconds, CPU seconds, peak RSS in MB) of ``command`` run to completion, from its own rusage."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(process.pid, 0)  # reaped here, so the usage is this process's alone
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} ... failed ({process.returncode}):\n{stderr[-2000:]}")
    return stdout, wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def contestant_command(
    contestant: str, model: str, folder: Path, texts: Path, output: Path, peer_python: Path | None
) -> list[str]:
    """The command line of one contestant's whole process."""
    if contestant == "engine":
        return [
            sys.executable,
            "-m",
            "core.embed",
            "--model",
            model,
            "--prompt",
            "none",
            "--pooling",
            "mean",
            "--precision",
            "fp32",
            "--device",
            "cpu",
            "--no-cache",
            "--input",
            str(texts),
            "--output",
            str(output),
        ]
    python = peer_python if contestant == "llm2vec" else Path(sys.executable)
    if python is None:
        raise ValueError("llm2vec needs its environment's Python")
    worker = [str(python), str(Path(__file__).resolve()), "--worker", contestant, "--folder", str(folder)]
    return [*worker, "--input", str(texts), "--output", str(output), "--batch-size", str(PEER_BATCH_SIZE)]


def run_contestant(
    contestant: str, model: str, folder: Path, texts: Path, output: Path, peer_python: Path | None, round_: int
) -> Run:
    """One whole-process run; the encode's seconds come from the engine's sidecar or the worker's result line."""
    from core.runtime.paths import REPO_ROOT

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO_ROOT)}
    env.pop("PYTHONSTARTUP", None)
    output.unlink(missing_ok=True)
    output.with_suffix(".json").unlink(missing_ok=True)
    command = contestant_command(contestant, model, folder, texts, output, peer_python)
    stdout, wall, cpu, rss = _timed_process(command, env)
    if contestant == "engine":
        sidecar = json.loads(output.with_suffix(".json").read_text(encoding="utf-8"))
        encode_wall, encode_cpu = float(sidecar["seconds"]), float(sidecar["cpu_seconds"])
    else:
        record = parse_result(stdout)
        encode_wall, encode_cpu = float(record["encode_wall"]), float(record["encode_cpu"])
    count = len(_read_texts(texts))
    return Run(contestant, count, round_, wall, cpu, encode_wall, encode_cpu, rss)


# ----- the tables
def _spread(values: Sequence[float], digits: int = 2) -> str:
    return f"{min(values):.{digits}f} / {statistics.median(values):.{digits}f} / {max(values):.{digits}f}"


FIGURES = (
    ("cpu", "whole CPU s"),
    ("wall", "whole wall s"),
    ("encode_cpu", "encode CPU s"),
    ("encode_wall", "encode wall s"),
    ("startup_cpu", "start-up CPU s"),
    ("startup_wall", "start-up wall s"),
    ("peak_rss_mb", "peak RSS MB"),
)


def _digits(name: str) -> int:
    return 0 if name == "peak_rss_mb" else 2


def run_table(runs: Iterable[Run]) -> str:
    """Per text count and contestant: each figure's min / median / max over the rounds."""
    runs = list(runs)
    lines = [f"{'texts':>5}  {'contestant':22s}  " + "  ".join(f"{label:>22s}" for _, label in FIGURES)]
    for count in sorted({run.texts for run in runs}, reverse=True):
        for contestant in dict.fromkeys(run.contestant for run in runs):
            mine = [run for run in runs if run.texts == count and run.contestant == contestant]
            if mine:
                cells = [
                    f"{_spread([run.figure(name) for run in mine], 0 if name == 'peak_rss_mb' else 2):>22s}"
                    for name, _ in FIGURES
                ]
                lines.append(f"{count:>5}  {contestant:22s}  " + "  ".join(cells))
    return "\n".join(lines)


def ratio_table(runs: Iterable[Run], reference: str = "engine") -> str:
    """Per text count and peer: peer / ``reference`` seconds, round by round (a pair = one round), as min / median /
    max. Above 1: the reference is ahead."""
    runs = list(runs)
    lines = [f"{'texts':>5}  {'peer / ' + reference:28s}  " + "  ".join(f"{label:>22s}" for _, label in FIGURES[:4])]
    for count in sorted({run.texts for run in runs}, reverse=True):
        ours = {run.round: run for run in runs if run.texts == count and run.contestant == reference}
        for peer in dict.fromkeys(run.contestant for run in runs if run.contestant != reference):
            theirs = {run.round: run for run in runs if run.texts == count and run.contestant == peer}
            rounds = sorted(ours.keys() & theirs.keys())
            if not rounds:
                continue
            cells = []
            for name, _ in FIGURES[:4]:
                ratios = [theirs[r].figure(name) / ours[r].figure(name) for r in rounds if ours[r].figure(name) > 0]
                cells.append(f"{_spread(ratios) if ratios else 'n/a':>22s}")
            lines.append(f"{count:>5}  {peer:28s}  " + "  ".join(cells))
    return "\n".join(lines)


def agreement(reference: Any, other: Any) -> tuple[float, float]:
    """(min, mean) row-wise cosine between two ``(texts, dim)`` matrices of the same texts."""
    import numpy as np

    a, b = np.asarray(reference, dtype=np.float64), np.asarray(other, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"vectors of different shapes: {a.shape} vs {b.shape}")
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(cosine.min()), float(cosine.mean())


# ----- the command
def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core.bench --peers", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", help="packaged name or model folder (all three read it)")
    parser.add_argument("--sizes", default="512,128", help="text counts, comma-separated (default 512,128)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of A B C per text count (default 3)")
    parser.add_argument(
        "--contestants",
        default=",".join(CONTESTANTS),
        help=f"the engine first ({', '.join(CONTESTANTS)})",
    )
    parser.add_argument("--peer-venv", type=Path, help="llm2vec's environment (default: under the cache folder)")
    parser.add_argument("--setup-only", action="store_true", help="create llm2vec's environment and folder, then stop")
    parser.add_argument("--out", type=Path, help="also write every run as JSON to this file")
    # The workers' own options (this file run by a peer's interpreter).
    parser.add_argument("--worker", choices=CONTESTANTS[1:], help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=PEER_BATCH_SIZE, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if args.worker:
        return _worker(args.worker, args.folder, args.input, args.output, args.batch_size)
    return bench(args)


def bench(args: argparse.Namespace) -> int:
    import numpy as np

    from core.models.registry import resolve_model_path
    from core.runtime.errors import ConfigError
    from core.runtime.files import write_json

    contestants = [name.strip() for name in args.contestants.split(",") if name.strip()]
    unknown = sorted(set(contestants) - set(CONTESTANTS))
    if unknown or not contestants or contestants[0] != "engine":
        raise ConfigError(
            f"--contestants lists the engine first, then any of llm2vec, sentence-transformers: {unknown}"
        )
    sizes = [int(size) for size in args.sizes.split(",") if size.strip()]
    if not sizes or min(sizes) < 1 or args.rounds < 1:
        raise ConfigError("--sizes takes positive text counts (e.g. 512,128) and --rounds at least 1.")
    folder = Path(resolve_model_path(args.model))
    peer_python = old_folder = None
    if "llm2vec" in contestants:
        peer_python = ensure_peer_venv(args.peer_venv)
        old_folder = old_format_folder(folder)
        print(f"llm2vec reads an old-format copy of {folder}: {old_folder} (transformers 4.44 cannot read the folder)")
    if args.setup_only:
        return 0
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="peers-") as scratch:
        scratch_path = Path(scratch)
        for count in sorted(sizes, reverse=True):
            texts = scratch_path / f"texts-{count}.txt"
            texts.write_text("\n".join(peer_texts(count)) + "\n")
            vectors: dict[str, Any] = {}
            for round_ in range(1, args.rounds + 1):
                for contestant in contestants:
                    read_from = old_folder if contestant == "llm2vec" else folder
                    output = scratch_path / f"{contestant}-{count}.npy"
                    run = run_contestant(contestant, args.model, read_from, texts, output, peer_python, round_)
                    runs.append(run)
                    vectors[contestant] = np.load(output)
                    print(
                        f"{count} texts, round {round_}, {contestant}: {run.wall:.1f} s wall, {run.cpu:.1f} s CPU "
                        f"(encode {run.encode_wall:.1f} s wall, {run.encode_cpu:.1f} s CPU)",
                        flush=True,
                    )
            for peer in contestants[1:]:
                low, mean = agreement(vectors["engine"], vectors[peer])
                print(f"{count} texts: cosine engine vs {peer}: min {low:.7f}, mean {mean:.7f}")
    print(
        f"\nseconds, min / median / max over {args.rounds} round(s); load average {os.getloadavg()[0]:.2f} at the end"
    )
    print(run_table(runs))
    print("\nratios peer / engine per round, min / median / max (above 1: the engine is ahead)")
    print(ratio_table(runs))
    if args.out:
        write_json(args.out, [run.__dict__ for run in runs])
    return 0


if __name__ == "__main__":
    if "--worker" in sys.argv:  # a peer's interpreter: this project's packages may not import there
        raise SystemExit(main())
    from core.runtime.errors import run_cli

    raise SystemExit(run_cli(main))
