"""``python -m core.models``: prepare and list models (see ``core.models.registry``)."""

from core.models.registry import main
from core.runtime.errors import run_cli

if __name__ == "__main__":
    raise SystemExit(run_cli(main))
