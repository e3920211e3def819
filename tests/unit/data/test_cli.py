"""``python -m core.data``: errors are one ``error: ...`` line (exit 2, through run_cli); show and list."""

from __future__ import annotations

import subprocess
import sys

from core.data import prepare
from core.data.cli import main
from core.runtime.errors import run_cli
from core.runtime.paths import REPO_ROOT


def test_cli_errors_are_one_line(capsys, tmp_path):
    assert run_cli(main, ["show", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown dataset") and err.count("\n") == 1
    assert run_cli(main, ["prepare", "--tasks", "r8,foo", "--data-dir", str(tmp_path)]) == 2
    assert "unknown task(s) foo" in capsys.readouterr().err
    assert run_cli(main, ["show", str(tmp_path / "empty.csv")]) == 2
    assert capsys.readouterr().err.startswith("error: no such file")


def test_cli_show_and_list(capsys, tmp_path, store, data_dir):
    path = tmp_path / "mine.jsonl"
    path.write_text('{"text": "hello", "label": "a"}\n{"text": "world", "label": "b"}\n')
    assert main(["show", str(path), "--n", "1"]) == 0
    out = capsys.readouterr().out
    assert "mine: 2 texts, 2 labels" in out and "- [a] hello" in out
    prepare(["r8"], data_dir, wheels=store)
    assert main(["list", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert "r8" in out and "test 3, train 2, 2 labels" in out and "not prepared" in out


def test_python_m_core_data_runs_the_cli(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "core.data", "show", "nonexistent-task", "--data-dir", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: unknown dataset 'nonexistent-task'")
    assert "Traceback" not in proc.stderr
