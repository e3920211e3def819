"""``python -m analysis.faithfulness``: the faithfulness report (see ``analysis.faithfulness.report``)."""

from analysis.faithfulness.report import main
from core.runtime.errors import run_cli

if __name__ == "__main__":
    raise SystemExit(run_cli(main))
