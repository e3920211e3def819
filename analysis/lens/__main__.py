"""``python -m analysis.lens``: the lens report's CLI (``--help`` lists the options)."""

from __future__ import annotations

from analysis.lens.cli import main
from core.runtime.errors import run_cli

if __name__ == "__main__":
    raise SystemExit(run_cli(main))
