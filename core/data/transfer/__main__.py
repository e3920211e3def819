"""``python -m core.data.transfer``: the transfer sets' CLI (``core.data.transfer.cli``)."""

from core.data.transfer.cli import main
from core.runtime.errors import run_cli

if __name__ == "__main__":
    raise SystemExit(run_cli(main))
