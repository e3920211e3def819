"""analysis.clustering on a tiny Llama: bad input gets one clean line, grid specs parse, torchrun agrees."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.clustering import GridConfig, GridError, ModelSpec, parse_model_specs, run_grid
from tests.unit.clustering.test_clustering import (
    _with_models,
    cell_files,
    cli,
    labelled_csv,
    main,
    synthetic_rows,
    write_csv,
)

__all__ = ["labelled_csv"]  # a fixture used here, imported from the grid tests


# --------------------------------------------------------------------------------------------
# Bad input


def assert_clean_error(capsys, *needles: str) -> None:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


def test_file_without_named_columns(tiny_model_dir, tmp_path, capsys):
    bad = write_csv(tmp_path / "bad.csv", synthetic_rows(), columns=("sentence", "topic"))
    assert main(cli(tiny_model_dir, str(bad), tmp_path / "out")) == 2
    assert_clean_error(capsys, "no column 'text'")
    assert main(cli(tiny_model_dir, f"{bad}:sentence:category", tmp_path / "out")) == 2
    assert_clean_error(capsys, "no column 'category'")


def test_one_label_and_too_few_texts(tiny_model_dir, tmp_path, capsys):
    rows = [{"text": f"the dog runs {i}", "label": "animals"} for i in range(6)]
    one = write_csv(tmp_path / "one.csv", rows)
    assert main(cli(tiny_model_dir, str(one), tmp_path / "out")) == 2
    assert_clean_error(capsys, "at least 2")
    three = write_csv(tmp_path / "three.csv", synthetic_rows(per_label=2))
    assert main(cli(tiny_model_dir, str(three), tmp_path / "out", "--max-texts", "2")) == 2
    assert_clean_error(capsys, "fewer texts (2) than clusters")


def test_unknown_names(tiny_model_dir, labelled_csv, tmp_path, capsys):
    assert main(cli(tiny_model_dir, "no-such-task", tmp_path / "out")) == 2
    assert_clean_error(capsys, "unknown task 'no-such-task'")
    assert main(cli(tiny_model_dir, "missing.csv", tmp_path / "out")) == 2
    assert_clean_error(capsys, "no such file")
    argv = cli(tiny_model_dir, str(labelled_csv), tmp_path / "out")
    assert main(_with_models(argv, str(tmp_path / "no-model"))) == 2
    assert_clean_error(capsys, "Unknown model")
    assert main(_with_models(argv, f"{tiny_model_dir}+{tmp_path}")) == 2
    assert_clean_error(capsys, "no adapter")
    argv[argv.index("--poolings") + 1] = "mean,middle"
    assert main(argv) == 2
    assert_clean_error(capsys, "unknown pooling 'middle'")
    assert main([*cli(tiny_model_dir, str(labelled_csv), tmp_path / "out"), "--layers", "99"]) == 2
    assert_clean_error(capsys, "out of range")
    assert not cell_files(tmp_path / "out")


def test_unreachable_mteb_task_keeps_completed_cells(tiny_model_dir, labelled_csv, tmp_path, capsys):
    out = tmp_path / "grid"
    assert main(cli(tiny_model_dir, f"{labelled_csv},TwentyNewsgroupsClustering.v2", out)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot load mteb task 'TwentyNewsgroupsClustering.v2'") and "hub" in err
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert len(cell_files(out)) == 4 and (out / "summary.md").is_file()


def test_parse_model_specs(tmp_path):
    adapter = tmp_path / "lora"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "embedding_lens.json").write_text(json.dumps({"base_model": "smollm2-135m"}))
    assert parse_model_specs(["smollm2-135m", str(adapter)]) == [
        ModelSpec("smollm2-135m"),
        ModelSpec("smollm2-135m", str(adapter)),
    ]
    (adapter / "embedding_lens.json").unlink()
    with pytest.raises(GridError, match="base model"):
        parse_model_specs([str(adapter)])
    with pytest.raises(GridError, match="no models"):
        parse_model_specs([" "])


def test_run_grid_validates_before_loading(tmp_path):
    config = GridConfig([ModelSpec("smollm2-135m")], ["no placeholder"], ["mean"], ["-1"], ["trec-coarse"], tmp_path)
    with pytest.raises(GridError, match="placeholder"):
        run_grid(config)


def test_two_processes_score_the_same_cells_as_one(tiny_model_dir, labelled_csv, tmp_path):
    """torchrun with 2 CPU processes (gloo): the groups split across ranks, rank 0 summarises every cell."""

    repo = Path(__file__).resolve().parents[3]
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(cli(tiny_model_dir, str(labelled_csv), one)) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command += ["-m", "analysis.clustering", *cli(tiny_model_dir, str(labelled_csv), two), "--device", "cpu"]
    done = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "cells: 4 computed" in done.stdout  # rank 0 reports both ranks' cells

    def scores(out: Path) -> dict[str, float]:
        cells = [json.loads(path.read_text()) for path in cell_files(out)]
        return {f"{c['prompt']['name']}/{c['pooling']}": c["scores"]["v_measure"] for c in cells}

    assert scores(two) == pytest.approx(scores(one), abs=1e-6)
    assert len(scores(two)) == 4 and (two / "summary.csv").is_file()


def test_a_bidirectional_model_is_filed_under_prompt_none_whatever_the_prompts(tiny_bert_dir, labelled_csv, tmp_path):
    """MiniLM-like encoders get the text alone: a run with --prompts eol must find (not duplicate) their cells."""
    out = tmp_path / "grid"
    for prompts in ("eol", "none"):
        argv = cli(tiny_bert_dir, str(labelled_csv), out)
        argv[argv.index("--prompts") + 1] = prompts
        assert main(argv) == 0
    assert [path.name.split("__")[1:3] for path in cell_files(out)] == [["none", "mean"]]
