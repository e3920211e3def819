"""``python -m core.bench --prefix``: prefix reuse against full forwards, in one run.

Three cases on the same loaded model, each encoded with reuse on (A) and off (B), alternating A B A B for
``rounds`` rounds (the machine is shared): short prompted texts (TREC questions in the default prompt, whose
prefix every text of a batch shares), long prompted texts (the same prefix, a smaller share of each text), and
perturbed texts (each TREC question with one word removed at every position, run against its original as the
faithfulness report does). Prints per case and mode: tokens (the texts' own), token-passes (tokens the decoder
ran), median wall and CPU seconds, tokens/s, the B/A ratios and the largest vector difference between the modes.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from core.data import load_task
from core.encoding.encoder import Encoder
from core.encoding.setting import DEFAULT_PROMPT
from core.models.registry import load_model

__all__ = ["Case", "encode_against", "main", "prefix_cases", "run_case"]

Case = tuple[str, list[str], Callable[[Encoder], np.ndarray]]


def encode_against(encoder: Encoder, texts: Sequence[str], originals: Sequence[str], of: Sequence[int]) -> np.ndarray:
    """Vectors of ``texts``, each run against its original ``originals[of[i]]`` as a reference (reuse on) or
    whole (reuse off); the originals' reference pass is part of the work."""
    plan = encoder.plan()
    items = encoder.prepare(list(texts), allow_empty=True)
    references = encoder.references(encoder.prepare(list(originals)), plan, [False]) if encoder.prefix_reuse else None
    against = (references, of) if references is not None else None
    out = np.zeros((len(items), encoder.dim), dtype=np.float32)
    with torch.inference_mode():
        for group, states in encoder.forward_shared(items, plan, [False], against):
            out[group] = plan.poolings[0](states[False]).cpu().numpy()
    return out


def _one_word_removed(text: str) -> list[str]:
    words = text.split()
    return [" ".join(words[:i] + words[i + 1 :]) for i in range(len(words))] if len(words) > 1 else []


def prefix_cases(n_short: int, n_long: int, n_perturbed: int, seed: int = 0) -> list[Case]:
    """The three cases: (name, texts whose tokens are counted, how an encoder encodes them)."""
    rng = random.Random(seed)
    short = rng.sample(load_task("trec-fine").texts, n_short)
    pool = [" ".join(t.split()[:200]) for t in load_task("20ng-p2p").texts if len(t.split()) >= 120]
    long = rng.sample(pool, min(n_long, len(pool)))
    originals = rng.sample(load_task("trec-fine").texts, n_perturbed)
    perturbed, of = [], []
    for index, text in enumerate(originals):
        removed = _one_word_removed(text)
        perturbed += removed
        of += [index] * len(removed)
    return [
        ("short prompted (trec-fine)", short, lambda encoder: encoder.encode(short)),
        ("long prompted (20ng-p2p)", long, lambda encoder: encoder.encode(long)),
        ("perturbed vs original", perturbed, lambda encoder: encode_against(encoder, perturbed, originals, of)),
    ]


def run_case(case: Case, on: Encoder, off: Encoder, rounds: int) -> dict[str, object]:
    """Alternate reuse on and off ``rounds`` times; medians of wall and CPU seconds, token-passes per encode."""
    name, texts, encode = case
    tokens = sum(len(item.input_ids) for item in on.prepare(texts, allow_empty=True))
    runs: dict[str, dict[str, list[float]]] = {mode: {"wall": [], "cpu": []} for mode in ("on", "off")}
    passes: dict[str, int] = {}
    vectors: dict[str, np.ndarray] = {}
    for _ in range(rounds):
        for mode, encoder in (("on", on), ("off", off)):
            snapshot = encoder.token_passes.snapshot()
            wall, cpu = time.perf_counter(), time.process_time()
            vectors[mode] = encode(encoder)
            runs[mode]["wall"].append(time.perf_counter() - wall)
            runs[mode]["cpu"].append(time.process_time() - cpu)
            passes[mode] = encoder.token_passes.since(snapshot)
    median = {mode: {k: statistics.median(v) for k, v in values.items()} for mode, values in runs.items()}
    return {
        "case": name,
        "texts": len(texts),
        "tokens": tokens,
        "passes": passes,
        "median": median,
        "max_abs_difference": float(np.abs(vectors["on"] - vectors["off"]).max()),
    }


def main(args: argparse.Namespace) -> int:
    loaded = load_model(args.model, device=args.device)
    common = {"prompt": DEFAULT_PROMPT, "pooling": "mean", "precision": args.precision, "cache": False}
    on = Encoder(loaded, prefix_reuse=True, **common)
    off = on.with_setting(prefix_reuse=False)
    warm = ["a warm-up text", "a second warm-up text, longer than the first one"]
    for encoder in (on, off):  # several rows, so the reuse path's first call is not timed either
        encoder.encode(warm)
    print(
        f"model {args.model}, prompt {DEFAULT_PROMPT!r}, mean pooling, {on.precision}, "
        f"torch threads {torch.get_num_threads()}, {args.rounds} alternating rounds (medians)",
        flush=True,
    )
    n = max(args.texts, 8)
    for case in prefix_cases(n, max(n // 4, 4), max(n // 8, 4)):
        result = run_case(case, on, off, args.rounds)
        med, passes = result["median"], result["passes"]
        print(f"{result['case']}: {result['texts']} texts, {result['tokens']} tokens", flush=True)
        for mode in ("on", "off"):
            wall, cpu = med[mode]["wall"], med[mode]["cpu"]
            print(
                f"  reuse {mode:3s}: {passes[mode]:7d} token-passes, {wall:7.2f} s wall, {cpu:7.2f} s CPU, "
                f"{result['tokens'] / wall:8.0f} tokens/s",
                flush=True,
            )
        print(
            f"  off/on: token-passes {passes['off'] / max(passes['on'], 1):.2f}x, wall "
            f"{med['off']['wall'] / med['on']['wall']:.2f}x, CPU {med['off']['cpu'] / med['on']['cpu']:.2f}x; "
            f"largest vector difference {result['max_abs_difference']:.2e}",
            flush=True,
        )
    return 0
