"""``python -m core.export``: write a sentence-transformers folder (see ``core.export.folder``)."""

from core.export.folder import main
from core.runtime.errors import run_cli

if __name__ == "__main__":
    raise SystemExit(run_cli(main))
