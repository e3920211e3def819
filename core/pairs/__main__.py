"""``python -m core.pairs``: build positive pairs (see ``core.pairs.build``)."""

from core.pairs.build import main
from core.runtime.errors import run_cli

if __name__ == "__main__":
    raise SystemExit(run_cli(main))
