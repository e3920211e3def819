"""``python -m core.bench --check`` on the tiny model: every key path passes on the CPU, and a failure is reported."""

from __future__ import annotations

import pytest

from core.bench.check import run_check
from core.bench.cli import main


@pytest.mark.slow
def test_check_passes_every_path_on_the_cpu(tiny_model_dir, capsys):
    assert main(["--check", "--model", str(tiny_model_dir), "--device", "cpu", "--precision", "fp32"]) == 0
    out = capsys.readouterr().out
    for name in ("embed", "attention capture", "train + resume", "grid cell", "shared trunk", "export"):
        assert f"pass  {name}" in out
    assert "all checks passed" in out and "tok/s" in out and "peak" in out


def test_a_failing_check_is_reported_and_the_rest_skipped(tmp_path):
    missing = tmp_path / "no-model"
    missing.mkdir()
    results = run_check(str(missing), "cpu", "fp32")
    status = {result.name: result.status for result in results}
    assert status["embed"] == "FAIL" and "config.json" in results[0].detail
    assert status["export"] == "skip"
