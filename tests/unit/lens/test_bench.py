"""The lens bench end to end on the tiny model: the parts, a ratio per pair, and the check against the reference."""

from __future__ import annotations

import pytest

from analysis.lens.bench import BenchConfig, main, run_bench
from core.runtime.errors import ConfigError
from tests.unit.lens.test_report import write_task


@pytest.mark.slow
def test_bench_reports_a_ratio_per_pair_and_the_check(tiny_model_dir, tiny_adapter_dir, tmp_path, capsys):
    task = str(write_task(tmp_path, n=15))
    config = BenchConfig(adapter=str(tiny_adapter_dir), model=str(tiny_model_dir), task=task, n=12, repeats=2,
                         device="cpu")  # fmt: skip
    result = run_bench(config)
    assert {"ratio_1", "ratio_2"} <= set(result) and result["ratio"] > 0
    parts = result["forward_all_layers_both"] + result["lens_all_layers_both"] + result["profile"]
    assert result["lens_path_total"] == pytest.approx(parts, rel=0.5)  # medians of sums vs sums of medians
    assert 0 < result["  of which LM-head products"] <= result["lens_all_layers_both"]
    args = ["--adapter", str(tiny_adapter_dir), "--model", str(tiny_model_dir), "--task", task, "--n", "12",
            "--device", "cpu", "--check"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "lens equals the per-layer reference: yes" in out and "ratio lens path / plain encode" in out
    with pytest.raises(ConfigError):
        BenchConfig(repeats=0)
