"""``python -m core.models``: prepare and list models (see ``core.models.cli``)."""

from core.models.cli import main
from core.runtime.errors import run_cli

if __name__ == "__main__":
    raise SystemExit(run_cli(main))
