"""How many torch threads the app's interactive work uses: the cores other processes leave free, at least one.

torch starts one OpenMP thread per core and every operation ends at a barrier where they wait for each other.
Beside CPU-bound processes one of them is often descheduled, so each small operation waits a scheduler slice for
it: integrated gradients (thousands of small operations) then slows far beyond the CPU share it lost. One thread
per free core keeps the slowdown in proportion. The app also asks OpenMP to sleep rather than spin while it
waits (``OMP_WAIT_POLICY=PASSIVE``, set before torch loads), so idle workers take no CPU from the busy ones.
"""

from __future__ import annotations

import os
import time

__all__ = ["WAIT_POLICY", "busy_elsewhere", "fit_threads"]

WAIT_POLICY = {"OMP_WAIT_POLICY": "PASSIVE"}  # read by OpenMP once, when torch loads


def _runnable() -> int | None:
    """Scheduling entities runnable right now, machine-wide (``/proc/loadavg``'s 4th field), or None off Linux."""
    try:
        with open("/proc/loadavg") as handle:
            return int(handle.read().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return None


def busy_elsewhere(samples: int = 5, interval: float = 0.01) -> int:
    """How many cores other runnable work wants now: the median of a few instant samples, less this thread."""
    counts = [count for _ in range(samples) if (count := _runnable()) is not None and time.sleep(interval) is None]
    if not counts:
        return 0
    return max(0, sorted(counts)[len(counts) // 2] - 1)


def fit_threads(cores: int | None = None) -> int:
    """Set torch's intra-op threads to the cores free of other work (at least 1, at most ``cores``); return it.

    ``cores`` defaults to the CPUs this process may run on. Cheap (about 50 ms): call it before interactive work.
    """
    import torch

    available = cores or len(os.sched_getaffinity(0))
    threads = max(1, min(available, available - busy_elsewhere()))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads
