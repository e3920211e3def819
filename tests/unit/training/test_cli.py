"""``python -m core.train``: options, recipes, one-line errors, torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.runtime.errors import run_cli
from core.training.cli import main
from tests.unit.training.common import lora_weights, max_diff


@pytest.mark.slow
def test_cli_errors_are_one_line_and_exit_2(tiny_dir, pair_file, tmp_path, capsys):
    code = run_cli(
        main,
        [
            "--out",
            str(tmp_path / "x"),
            "--pairs",
            str(pair_file),
            "--base-model",
            str(tiny_dir),
            "--batch-size",
            "1",
            "--no-progress",
        ],
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error:") and "\n" not in err
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"lora_rank": 8}))
    assert run_cli(main, ["--out", str(tmp_path / "y"), "--config", str(config)]) == 2
    assert "unknown keys: lora_rank" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_config_file_and_flags(tiny_dir, pair_file, tmp_path, capsys):
    config = tmp_path / "c.json"
    config.write_text(
        json.dumps({"pairs": str(pair_file), "base_model": str(tiny_dir), "lora_r": 2, "lora_layers": 0, "steps": 5})
    )
    out = tmp_path / "out"
    code = main(
        [
            "--config",
            str(config),
            "--out",
            str(out),
            "--steps",
            "2",
            "--batch-size",
            "4",
            "--target-modules",
            "q,v",
            "--no-progress",
        ]
    )
    assert code == 0, capsys.readouterr().err
    card = json.loads((out / "card.json").read_text())
    assert card["settings"]["lora_r"] == 2 and card["settings"]["steps"] == 2
    assert card["settings"]["target_modules"] == ["q", "v"]
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 2


@pytest.mark.slow
def test_two_processes_match_one_with_the_same_global_batch(tiny_dir, pair_file, tmp_path):
    # A small lr: Adam's first updates are ~lr * sign(grad), which magnifies float noise in near-zero grads.
    common = [
        "-m",
        "core.train",
        "--pairs",
        str(pair_file),
        "--base-model",
        str(tiny_dir),
        "--steps",
        "2",
        "--batch-size",
        "8",
        "--micro-batch-size",
        "6",
        "--lora-r",
        "4",
        "--lora-layers",
        "0",
        "--lora-dropout",
        "0",
        "--lr",
        "0.001",
        "--warmup-steps",
        "1",
        "--precision",
        "fp32",
        "--no-progress",
        "--checkpoint-every",
        "0",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    root = Path(__file__).resolve().parents[2]
    single = subprocess.run(
        [sys.executable, *common, "--out", str(tmp_path / "one")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr[-2000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    double = subprocess.run(
        [*torchrun, *common, "--out", str(tmp_path / "two")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert double.returncode == 0, double.stderr[-2000:]
    assert json.loads((tmp_path / "two" / "card.json").read_text())["run"]["world_size"] == 2
    losses = [
        [json.loads(x)["loss"] for x in (tmp_path / d / "train_log.jsonl").read_text().splitlines()]
        for d in ("one", "two")
    ]
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)
    assert max_diff(lora_weights(tmp_path / "one"), lora_weights(tmp_path / "two")) <= 1e-5
