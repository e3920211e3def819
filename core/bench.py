"""``python -m core.bench``: the paper's embedding loop against this engine, in one run.

(a) the paper's loop: the full causal LM (LM head included), batches of 32 in arrival order padded
to the longest, all hidden states returned, fp32, mean pooling; (b) this engine on the same
texts. Prints tokens/s of both, their ratio, cosine agreement, throughput against the measured
matrix-multiply peak, and peak RSS.

``--methods``: tokens/s of the training-free methods (core.methods) on the same texts instead: plain
PromptEOL, echo (twice the tokens), and token prepending against itself with an empty layer range, which
runs exactly the same tokens without the hooks, so the difference is the hooks' cost.
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np
import torch

from core.data import load_task
from core.encoder import Encoder, cpu_has_bf16
from core.errors import ConfigError, run_cli
from core.measure import peak_rss_mb
from core.methods import TokenPrepending, parse_method
from core.models import DEFAULT_MODEL, load_model


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
            )
            output = model(**batch, output_hidden_states=True)
            mask = batch["attention_mask"].unsqueeze(-1).float()
            vectors.append(((output.hidden_states[-1] * mask).sum(1) / mask.sum(1)).numpy())
    return np.concatenate(vectors)


def non_embedding_parameters(encoder: Encoder) -> int:
    backbone = encoder.loaded.backbone
    embedding = backbone.get_input_embeddings().weight.numel()
    return sum(p.numel() for p in backbone.parameters()) - embedding


def timed(fn, *args) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def method_speeds(model: str, texts: list[str], precision: str, tp_spec: str, rounds: int) -> None:
    """Prints tokens/s per method (best of ``rounds`` interleaved runs: the machine is shared) and TP's overhead."""
    loaded = load_model(model)
    tp = parse_method(tp_spec)
    if not isinstance(tp, TokenPrepending):
        raise ConfigError(f"--tp takes a token-prepending spec such as tp:1-6, not {tp_spec!r}.")
    tp = tp.for_model(loaded.num_layers)
    runs = {
        "plain (eol)": Encoder(loaded, prompt="eol", pooling="last", precision=precision, cache=False),
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
    parser = argparse.ArgumentParser(prog="python -m core.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--methods", action="store_true", help="time plain, echo and token prepending instead")
    parser.add_argument("--tp", default="tp", help="with --methods: the token-prepending spec timed (default: tp)")
    parser.add_argument("--rounds", type=int, default=3, help="with --methods: interleaved rounds, best kept")
    args = parser.parse_args(argv)

    texts = benchmark_texts(args.texts)
    if args.methods:
        method_speeds(args.model, texts, args.precision, args.tp, args.rounds)
        return 0
    encoder = Encoder(args.model, precision=args.precision, cache=False)
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


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
