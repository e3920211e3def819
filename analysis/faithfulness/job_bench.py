"""Time the attribution job end to end: ``python -m analysis.faithfulness.job_bench [--max-steps N ...]``.

Runs :func:`analysis.faithfulness.job.run_job` in this process on a fresh folder (no cache hits) for a pair of
10-word sentences, with the model loaded inside the timing as the page's background process loads it, and
prints each part's seconds, the IG steps used and deltas, the total wall and CPU seconds and the load average it ran
under.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import threading
import time
from pathlib import Path

from analysis.faithfulness.job import DEFAULT_MAX_STEPS, AttributionRequest, job_folder, run_job, touch_heartbeat
from core.encoding.setting import EmbeddingSetting
from core.models.adapters import SHIPPED_ADAPTER
from core.models.registry import DEFAULT_MODEL
from core.runtime.errors import run_cli

__all__ = ["main"]

TEXT_A = "The central bank raised interest rates again to fight stubborn inflation."
TEXT_B = "Officials lifted borrowing costs once more to curb rising consumer prices."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analysis.faithfulness.job_bench", description=__doc__)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--adapter", default=str(SHIPPED_ADAPTER), help="adapter folder; 'none' for base only")
    parser.add_argument("--max-steps", type=int, nargs="+", default=[DEFAULT_MAX_STEPS], help="IG caps to time")
    parser.add_argument("--text-a", default=TEXT_A)
    parser.add_argument("--text-b", default=TEXT_B)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    adapter = None if args.adapter == "none" else args.adapter
    with tempfile.TemporaryDirectory(prefix="attribution-bench-") as root:
        for cap in args.max_steps:
            request = AttributionRequest(
                args.model, adapter, EmbeddingSetting.resolve(None), args.text_a, args.text_b, max_steps=cap
            )
            folder = job_folder(request, root)
            folder.mkdir(parents=True)
            touch_heartbeat(folder)
            done = threading.Event()

            def beat(folder: Path = folder, done: threading.Event = done) -> None:
                while not done.wait(5.0):
                    touch_heartbeat(folder)

            threading.Thread(target=beat, daemon=True).start()
            load_before = os.getloadavg()[0]
            started, cpu = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
            status = run_job(folder, request)
            total = time.perf_counter() - started
            after = resource.getrusage(resource.RUSAGE_SELF)
            cpu_s = after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime  # less load-bound than wall time
            done.set()
            parts = ", ".join(f"{p} {v.get('seconds', 0):.1f} s" for p, v in status["parts"].items())
            deltas = (status.get("ig") or {}).get("deltas", {})
            ig = "; ".join(
                f"{label}: A {d['steps_a']} steps {d['a']:.1%}, B {d['steps_b']} steps {d['b']:.1%}"
                for label, d in deltas.items()
            )
            print(
                f"cap {cap}: {status['state']} in {total:.1f} s, {cpu_s:.1f} CPU s "
                f"(model load {status.get('load_seconds', 0):.1f} s; "
                f"{parts}); IG {ig}; load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
