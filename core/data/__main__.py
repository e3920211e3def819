"""``python -m core.data``: see ``core.data.cli``."""

from core.data.cli import main
from core.runtime.errors import run_cli

if __name__ == "__main__":
    raise SystemExit(run_cli(main))
