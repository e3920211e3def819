"""``python -m analysis.neighbours``: see :mod:`analysis.neighbours.cli`."""

from __future__ import annotations

from analysis.neighbours.cli import main
from core.runtime.errors import run_cli

if __name__ == "__main__":
    raise SystemExit(run_cli(main))
