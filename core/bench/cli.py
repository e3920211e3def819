"""``python -m core.bench``: the paper's embedding loop against this engine, in one run.

(a) the paper's loop: the full causal LM (LM head included), batches of 32 in arrival order padded
to the longest, all hidden states returned, fp32, mean pooling; (b) this engine on the same
texts. Prints tokens/s of both, their ratio, cosine agreement, throughput against the measured
matrix-multiply peak, and peak RSS.

``--pair`` times base + adapter vectors as two passes and as one shared-trunk pair (``Encoder.encode_grid``)
and prints the ratio; ``--processes N`` times ``core.embed`` on the texts in 1 and in N processes (torchrun,
gloo on CPU) and prints tokens/s of each.

``--pair-matrix``: seconds of the token x token explanation of one similarity (``analysis.attribution.token_pairs``)
for two ~30-token texts, base and adapter, then again with text A cached and only text B new.

``--methods``: tokens/s of the training-free methods (core.encoding.methods) on the same texts instead: plain
PromptEOL, echo (twice the tokens), and token prepending against itself with an empty layer range, which
runs exactly the same tokens without the hooks, so the difference is the hooks' cost.

``--big NAME --weights fp32|bf16``: memory and time of embedding, attention capture and a training step on a
random-weight model built from a published config (``core.bench.big``).

``--check``: the key paths on the chosen device, pass or fail with tokens/s and peak memory (``core.bench.check``).

``--peers``: the engine against llm2vec and sentence-transformers, each a whole process (``core.bench.peers``).
``--prefix``: tokens/s and token-passes with and without prefix reuse (short and long prompted texts, perturbed texts
against their originals), alternating, in one run (``core.bench.prefix``).
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from core.data import load_task
from core.encoding.encoder import Encoder
from core.encoding.methods import TokenPrepending, parse_method
from core.encoding.setting import DEFAULT_PROMPT
from core.models.registry import DEFAULT_MODEL, load_model
from core.runtime.device import DEVICE_HELP, PRECISIONS, cpu_has_bf16
from core.runtime.errors import ConfigError, run_cli
from core.runtime.measure import peak_rss_mb
from core.runtime.paths import REPO_ROOT

BIG_NAMES = ("qwen2.5-0.5b", "qwen2.5-1.5b")  # core.bench.big.BIG_CONFIGS, named here without importing it
SHIPPED_ADAPTER = REPO_ROOT / "adapters" / "smollm2-135m-embed"


def benchmark_texts(n: int, seed: int = 0) -> list[str]:
    """``n`` real texts of mixed length (about 8-120 words) from four local-track tasks."""
    rng = random.Random(seed)
    sources = ["trec-fine", "20ng-s2s", "r8", "20ng-p2p"]
    texts: list[str] = []
    for index, task in enumerate(sources):
        pool = load_task(task).texts
        take = n // len(sources) + (1 if index < n % len(sources) else 0)
        texts += [" ".join(text.split()[:120]) for text in rng.sample(pool, take)]
    rng.shuffle(texts)
    return texts


def matmul_peak(dtype: torch.dtype, size: int = 1024, seconds: float = 1.0) -> float:
    """Measured FLOP/s of a square matrix multiply in ``dtype`` on this machine's threads."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        reps += 1
    return 2 * size**3 * reps / (time.perf_counter() - start)


def paper_loop(encoder: Encoder, texts: list[str], batch_size: int = 32) -> np.ndarray:
    tokenizer, model = encoder.tokenizer, encoder.loaded.model
    vectors = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                texts[start : start + batch_size],
                padding=True,
                truncation=True,
                max_length=encoder.max_length,
                return_tensors="pt",
            ).to(encoder.device)
            output = model(**batch, output_hidden_states=True)
            mask = batch["attention_mask"].unsqueeze(-1).float()
            vectors.append(((output.hidden_states[-1] * mask).sum(1) / mask.sum(1)).cpu().numpy())
    return np.concatenate(vectors)


def non_embedding_parameters(encoder: Encoder) -> int:
    backbone = encoder.loaded.backbone
    embedding = backbone.get_input_embeddings().weight.numel()
    return sum(p.numel() for p in backbone.parameters()) - embedding


def timed(fn, *args) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def method_speeds(
    model: str, texts: list[str], precision: str, tp_spec: str, rounds: int, device: str = "auto"
) -> None:
    """Prints tokens/s per method (best of ``rounds`` interleaved runs: the machine is shared) and TP's overhead."""
    loaded = load_model(model, device=device)
    tp = parse_method(tp_spec)
    if not isinstance(tp, TokenPrepending):
        raise ConfigError(f"--tp takes a token-prepending spec such as tp:1-6, not {tp_spec!r}.")
    tp = tp.for_model(loaded.num_layers)
    runs = {
        "plain (eol)": Encoder(loaded, prompt=DEFAULT_PROMPT, pooling="last", precision=precision, cache=False),
        "echo": Encoder(loaded, method="echo", pooling="mean", precision=precision, cache=False),
        f"tp {tp.start}-{tp.start} (no hooks)": Encoder(
            loaded, method=TokenPrepending(tp.start, tp.start), pooling="last", precision=precision, cache=False
        ),
        f"tp {tp.start}-{tp.exit}": Encoder(loaded, method=tp, pooling="last", precision=precision, cache=False),
    }
    tokens = {name: sum(len(item.input_ids) for item in encoder.prepare(texts)) for name, encoder in runs.items()}
    best = dict.fromkeys(runs, float("inf"))
    for encoder in runs.values():
        encoder.encode(texts[:8])  # warm-up
    print(f"model {model}, {len(texts)} texts, torch threads {torch.get_num_threads()}", flush=True)
    names = list(runs)
    cpu = dict.fromkeys(runs, float("inf"))  # CPU seconds: less disturbed than wall time by other processes
    for round_ in range(1, rounds + 1):
        for name, encoder in runs.items():
            started = time.process_time()
            best[name] = min(best[name], timed(encoder.encode, texts)[1])
            cpu[name] = min(cpu[name], time.process_time() - started)
        print(f"after round {round_} of {rounds} (best times so far):", flush=True)
        for name in names:
            rate = tokens[name] / best[name]
            print(
                f"{name:24s}: {tokens[name]:7d} tokens, {rate:8.0f} tokens/s ({best[name]:.2f} s wall, "
                f"{cpu[name]:.2f} s CPU)",
                flush=True,
            )
        wall, cpu_overhead = best[names[3]] / best[names[2]] - 1, cpu[names[3]] / cpu[names[2]] - 1
        print(
            f"token prepending overhead at equal tokens: {cpu_overhead:+.1%} CPU time, {wall:+.1%} wall (target < 10%)",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--peers" in argv:  # its own options: python -m core.bench --peers --help
        from core.bench.peers import main as peers

        return peers([arg for arg in argv if arg != "--peers"])
    parser = argparse.ArgumentParser(prog="python -m core.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--precision", default="auto", choices=PRECISIONS)
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument(
        "--pair", nargs="?", const=str(SHIPPED_ADAPTER), help="time base+adapter both ways (default: shipped adapter)"
    )
    parser.add_argument("--processes", type=int, help="time core.embed in 1 and in N processes (torchrun)")
    parser.add_argument(
        "--pair-matrix", nargs="?", const=str(SHIPPED_ADAPTER), help="time a token-pair matrix, base and adapter"
    )
    parser.add_argument("--methods", action="store_true", help="time plain, echo and token prepending instead")
    parser.add_argument("--tp", default="tp", help="with --methods: the token-prepending spec timed (default: tp)")
    parser.add_argument("--rounds", type=int, default=3, help="with --methods: interleaved rounds, best kept")
    parser.add_argument(
        "--check", action="store_true", help="run the key paths on --device, print pass/fail, tokens/s, peak memory"
    )
    parser.add_argument(
        "--peers",
        action="store_true",
        help="engine vs llm2vec and sentence-transformers (--peers --help)",
    )
    parser.add_argument("--prefix", action="store_true", help="time prefix reuse on and off (core.bench.prefix)")
    parser.add_argument("--big", choices=BIG_NAMES, help="measure a random-weight model from a published config")
    parser.add_argument("--weights", default="fp32", choices=("fp32", "bf16"), help="with --big: the weights' dtype")
    parser.add_argument("--long-tokens", type=int, default=1024, help="with --big: the long text's tokens (capture)")
    parser.add_argument("--embed-texts", type=int, default=16, help="with --big: texts embedded")
    parser.add_argument("--text-words", type=int, default=100, help="with --big: words in each embedded text")
    parser.add_argument("--no-train", action="store_true", help="with --big: skip the training step")
    parser.add_argument("--train-pairs", type=int, default=4, help="with --big: pairs in the training step's batch")
    parser.add_argument("--out", type=Path, help="with --big: write the measurements to this JSON file")
    parser.add_argument("--fits", type=Path, help="print the 'what fits where' table from a folder of --big records")
    args = parser.parse_args(argv)
    if args.fits:
        import json

        from core.bench.big import fits_table

        print(fits_table([json.loads(path.read_text()) for path in sorted(args.fits.glob("*.json"))]))
        return 0
    if args.big:
        from core.bench.big import main as big

        return big(args.big, args.weights, args.out, args, train=not args.no_train)
    if args.check:
        from core.bench.check import print_results, run_check

        results = run_check(args.model, args.device, args.precision)
        print_results(results, args.model, args.device)
        return 0 if all(result.status != "FAIL" for result in results) else 1
    if args.prefix:
        from core.bench.prefix import main as prefix

        return prefix(args)
    if args.pair:
        return bench_pair(args)
    if args.processes:
        return bench_processes(args)
    if args.pair_matrix:
        return bench_pair_matrix(args)

    texts = benchmark_texts(args.texts)
    if args.methods:
        method_speeds(args.model, texts, args.precision, args.tp, args.rounds, args.device)
        return 0
    encoder = Encoder(args.model, precision=args.precision, cache=False, device=args.device)
    tokens = sum(prepared.length for prepared in encoder.prepare(texts))
    print(f"model {args.model}, {len(texts)} texts, {tokens} tokens, torch threads {torch.get_num_threads()}")
    units = "yes" if cpu_has_bf16() else "no"
    print(f"CPU AMX bf16 units: {units}; engine precision {encoder.precision}")

    encoder.encode(texts[:8])  # warm-up for both paths (same weights)
    paper_vectors, paper_seconds = timed(paper_loop, encoder, texts)
    engine_vectors, engine_seconds = timed(encoder.encode, texts)
    cosine = (paper_vectors * engine_vectors).sum(1) / (
        np.linalg.norm(paper_vectors, axis=1) * np.linalg.norm(engine_vectors, axis=1)
    )
    paper_rate, engine_rate = tokens / paper_seconds, tokens / engine_seconds
    print(f"(a) paper loop : {paper_rate:8.0f} tokens/s ({paper_seconds:.1f} s)")
    print(f"(b) this engine: {engine_rate:8.0f} tokens/s ({engine_seconds:.1f} s)")
    print(f"speed-up b/a   : {engine_rate / paper_rate:8.2f}x")
    print(f"cosine b vs a  : min {cosine.min():.6f}, mean {cosine.mean():.6f}")

    flops_per_token = 2 * non_embedding_parameters(encoder)
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        peak = matmul_peak(dtype)
        emulated = name == "bf16" and not cpu_has_bf16()
        print(
            f"{name} matmul peak {peak / 1e12:.3f} TFLOP/s -> compute bound ~{peak / flops_per_token:,.0f} tokens/s; "
            + (
                "emulated on this CPU, not a target"
                if emulated
                else f"engine at {engine_rate * flops_per_token / peak:.1%} of it"
            )
        )
    print(f"peak RSS {peak_rss_mb():.0f} MB")
    return 0


def bench_pair(args: argparse.Namespace) -> int:
    """Base + adapter: two full passes against one pass that shares the layers below the adapter."""
    texts = benchmark_texts(args.texts)
    encoder = Encoder(args.model, args.pair, precision=args.precision, cache=False, device=args.device)
    loaded = encoder.loaded
    shared, layers = loaded.adapter_free_layers, loaded.num_layers
    print(f"model {args.model} + {args.pair}: adapter on layers {shared}..{layers - 1} of {layers}")
    print(f"{len(texts)} texts, {encoder.precision} on {encoder.device}, torch threads {torch.get_num_threads()}")

    def encode_pair(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        grids = encoder.encode_grid(texts, variants=(False, True))
        return next(iter(grids[False].values())), next(iter(grids[True].values()))

    encode_pair(texts[:8])  # warm-up
    start = time.perf_counter()
    base = encoder.encode(texts, use_adapter=False)
    tuned = encoder.encode(texts, use_adapter=True)
    two = time.perf_counter() - start
    (pair_base, pair_tuned), one = timed(encode_pair, texts)
    difference = max(np.abs(pair_base - base).max(), np.abs(pair_tuned - tuned).max())
    print(f"two passes     : {two:7.1f} s")
    print(f"shared trunk   : {one:7.1f} s (expected ratio (L+k)/L = {(layers + layers - shared) / layers:.2f} passes)")
    print(f"speed-up       : {two / one:7.2f}x; max |difference| {difference:.2e}")
    return 0


# Two texts of 27-30 words about one scene; the third replaces B to time a pair whose text A is cached.
PAIR_MATRIX_TEXTS = (
    "The old fisherman sat on the harbour wall at dawn, mending his torn nets with a wooden needle while the "
    "gulls circled above the quiet boats.",
    "Early in the morning a sailor repaired the fishing nets on the dock, stitching each broken knot as the "
    "seabirds called over the calm water.",
    "Before sunrise a young deckhand washed the ropes on the pier and hung them to dry beside the fish market, "
    "where the first traders were arriving.",
)


def bench_pair_matrix(args: argparse.Namespace, steps: int = 2) -> int:
    """Seconds of ``pair_matrix`` for two ~30-token texts, base and adapter; then one new text B, A cached."""
    from analysis.attribution.token_pairs import pair_matrix

    a, b, new_b = PAIR_MATRIX_TEXTS
    encoder = Encoder(args.model, args.pair_matrix, precision=args.precision, cache=False, device=args.device)
    print(f"model {args.model} + {args.pair_matrix}, {encoder.precision} on {encoder.device}, steps {steps}")
    for label, use_adapter in (("base", False), ("adapter", True)):
        first = pair_matrix(encoder, a, b, use_adapter, steps)
        cached = pair_matrix(encoder, a, new_b, use_adapter, steps)
        print(
            f"{label:8s}: {len(first.tokens_a)} x {len(first.tokens_b)} tokens in {first.seconds:.1f} s; "
            f"completeness error {first.error:.1e}; a new text B with A cached: {cached.seconds:.1f} s"
        )
    print(f"peak RSS {peak_rss_mb():.0f} MB")
    return 0


def bench_processes(args: argparse.Namespace) -> int:
    """``core.embed`` on the benchmark texts in one process and in ``--processes`` (torchrun), same settings."""
    texts = benchmark_texts(args.texts)
    encoder = Encoder(args.model, precision=args.precision, cache=False, device=args.device)
    tokens = sum(len(item.input_ids) for item in encoder.prepare(texts))
    outputs = {}
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "texts.txt"
        source.write_text("\n".join(" ".join(text.split()) for text in texts) + "\n")
        for processes in (1, args.processes):
            output = Path(folder) / f"out-{processes}.npy"
            launcher = [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                f"--nproc_per_node={processes}",
            ]
            command = [*launcher, "-m", "core.embed", "--model", args.model, "--input", str(source)]
            command += [
                "--output",
                str(output),
                "--no-cache",
                "--precision",
                encoder.precision,
                "--device",
                args.device,
            ]
            command += ["--chunk-size", str(max(1, len(texts) // (4 * processes)))]
            env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
            start = time.perf_counter()
            subprocess.run(command, check=True, env=env, cwd=REPO_ROOT, capture_output=True)
            seconds = time.perf_counter() - start
            outputs[processes] = np.load(output)
            print(f"{processes} process(es): {tokens / seconds:8.0f} tokens/s ({seconds:.1f} s wall, loads included)")
    difference = np.abs(outputs[1] - outputs[args.processes]).max()
    print(f"max |difference| 1 vs {args.processes} processes: {difference:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
