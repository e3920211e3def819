"""How the Attribution control slows down beside CPU-bound processes, per torch thread setting: ratios, not seconds.

    python scripts/bench_under_load.py [--model smollm2-135m] [--steps 64] [--busy 2] [--repeats 2] [--only 1,4]

Each setting runs in a fresh process (OpenMP reads its environment once, at load): it loads the model, runs
``compare_similarity`` once to warm up, then times it quiet and with ``--busy`` CPU-bound processes beside it.
Prints each setting's quiet time, loaded time and their ratio; the app's rule is the passive row
(``workbench.threads``). Other load on the machine counts as "quiet" too: compare the rows of one run.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SETTINGS = {
    "torch default (all cores, spinning waits)": {"threads": "default", "env": {}},
    "all cores, passive waits (the app's rule)": {"threads": "default", "env": {"OMP_WAIT_POLICY": "PASSIVE"}},
    "one thread": {"threads": "1", "env": {}},
}


def _spin() -> None:
    while True:
        pass


def _measure(model: str, steps: int, busy: int, repeats: int, threads: str) -> dict[str, float]:
    """In the child: warm up, then the median time quiet and beside ``busy`` spinning processes."""
    import torch

    from analysis.attribution.integrated_gradients import compare_similarity
    from core.encoding.encoder import Encoder

    encoder = Encoder(model, cache=False, device="cpu", precision="fp32")

    def once() -> float:
        if threads != "default":
            torch.set_num_threads(int(threads))
        started = time.perf_counter()
        compare_similarity(encoder, "a man is driving a car", "a person is riding a bicycle", max_steps=steps)
        return time.perf_counter() - started

    once()
    quiet = sorted(once() for _ in range(repeats))[repeats // 2]
    context = multiprocessing.get_context("fork")
    spinners = [context.Process(target=_spin, daemon=True) for _ in range(busy)]
    for spinner in spinners:
        spinner.start()
    try:
        time.sleep(1)
        loaded = sorted(once() for _ in range(repeats))[repeats // 2]
    finally:
        for spinner in spinners:
            spinner.kill()
    return {"quiet": quiet, "loaded": loaded, "threads_after": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--steps", type=int, default=64, help="IG step cap per attribution")
    parser.add_argument("--busy", type=int, default=2, help="CPU-bound processes beside the control")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--only", help="comma-separated setting numbers to run (1-based, in the order printed)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_measure(args.model, args.steps, args.busy, args.repeats, args.child)))
        return
    with open("/proc/loadavg") as handle:
        print(f"load average before: {handle.read().split()[0]} on {os.cpu_count()} cores; {args.busy} busy beside")
    chosen = {int(n) for n in args.only.split(",")} if args.only else set(range(1, len(SETTINGS) + 1))
    for number, (name, setting) in enumerate(SETTINGS.items(), 1):
        if number not in chosen:
            continue
        env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}  # the default row: OpenMP's default
        env.update({"PYTHONPATH": str(REPO), **setting["env"]})
        command = [sys.executable, __file__, "--model", args.model, "--steps", str(args.steps), "--busy",
                   str(args.busy), "--repeats", str(args.repeats), "--child", setting["threads"]]  # fmt: skip
        out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
        result = json.loads(out.strip().splitlines()[-1])
        print(
            f"{name:45s} quiet {result['quiet']:7.2f} s  loaded {result['loaded']:7.2f} s  "
            f"ratio {result['loaded'] / result['quiet']:5.2f}x",
            flush=True,
        )


if __name__ == "__main__":
    main()
