"""``python -m core.bench``: see ``core.bench.cli``."""

from core.bench.cli import main
from core.runtime.errors import run_cli

if __name__ == "__main__":
    raise SystemExit(run_cli(main))
