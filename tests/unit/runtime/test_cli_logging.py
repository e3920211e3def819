"""run_cli's logging: a CLI shows its progress lines whether it is imported or run as ``python -m MODULE``."""

from __future__ import annotations

import logging

import pytest

from core.runtime.errors import PROJECT_LOGGERS, configure_logging


@pytest.fixture
def project_loggers():
    """Leave the project loggers as they were: other tests read records through caplog."""
    saved = {name: (logging.getLogger(name).level, list(logging.getLogger(name).handlers)) for name in PROJECT_LOGGERS}
    yield
    for name, (level, handlers) in saved.items():
        logging.getLogger(name).setLevel(level)
        logging.getLogger(name).handlers[:] = handlers


@pytest.mark.parametrize("module", ["analysis.faithfulness.report", "__main__"])
def test_a_cli_modules_info_lines_reach_stderr(module, project_loggers, capsys):
    configure_logging()
    logging.getLogger(module).info("base: 32/600 texts measured")
    assert "base: 32/600 texts measured" in capsys.readouterr().err
