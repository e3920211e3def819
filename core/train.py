"""``python -m core.train --pairs pairs.jsonl --out DIR``: train a LoRA adapter (see ``core.training``)."""

from core.runtime.errors import run_cli
from core.training.cli import main

if __name__ == "__main__":
    raise SystemExit(run_cli(main))
