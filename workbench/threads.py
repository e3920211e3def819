"""OpenMP waits in the app: threads that wait sleep instead of spinning.

torch runs each operation on one OpenMP thread per core, and the threads meet at a barrier after each one. By
default a thread that arrives early spins at the barrier for a while before it sleeps. Beside CPU-bound processes
the spinning threads compete for the cores with the very thread they wait for, so integrated gradients (thousands
of small operations) slowed far beyond the CPU share it lost. With passive waits (``OMP_WAIT_POLICY=PASSIVE``) the
waiting threads sleep and the work degrades in proportion (``scripts/bench_under_load.py`` prints the ratios).

OpenMP reads the setting once, when torch loads its runtime: :func:`prefer_sleeping_waits` must run before anything
imports torch (first thing in ``workbench/app.py``). A value the user set is kept.
"""

from __future__ import annotations

import os
import sys

__all__ = ["WAIT_POLICY", "prefer_sleeping_waits"]

WAIT_POLICY = {"OMP_WAIT_POLICY": "PASSIVE"}


def prefer_sleeping_waits() -> bool:
    """Set :data:`WAIT_POLICY` where the user has not; False if torch is loaded already (then it is too late)."""
    for name, value in WAIT_POLICY.items():
        os.environ.setdefault(name, value)
    return "torch" not in sys.modules
