"""``python -m core.data.transfer``: the CLI lives in the package, which ``core.data`` imports; running this
submodule instead of the package keeps runpy from importing the module twice (and warning about it)."""

from core.data.transfer import main
from core.runtime.errors import run_cli

if __name__ == "__main__":
    raise SystemExit(run_cli(main))
