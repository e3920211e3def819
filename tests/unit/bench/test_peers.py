"""``python -m core.bench --peers``: its pure parts on the tiny model (result line, tables, agreement, the old-format
copy), and, opt-in, llm2vec itself in its environment when that environment exists."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.bench.peers import (
    RESULT_PREFIX,
    Run,
    agreement,
    contestant_command,
    parse_result,
    peer_venv_dir,
    ratio_table,
    run_table,
    write_old_format_copy,
)
from core.runtime.errors import ConfigError


def test_the_last_result_line_is_parsed_among_other_output():
    stdout = "\n".join(
        [
            "Loading weights: 100%",
            RESULT_PREFIX + json.dumps({"encode_wall": 9.0, "encode_cpu": 8.0}),
            RESULT_PREFIX + json.dumps({"encode_wall": 2.5, "encode_cpu": 4.0, "shape": [3, 8]}),
            "bye",
        ]
    )
    assert parse_result(stdout) == {"encode_wall": 2.5, "encode_cpu": 4.0, "shape": [3, 8]}


def test_a_missing_or_incomplete_result_line_is_an_error_that_shows_the_output():
    with pytest.raises(RuntimeError, match=r"(?s)no result line.*Traceback"):
        parse_result("Traceback (most recent call last):\n  boom")
    with pytest.raises(RuntimeError, match="lacks encode seconds"):
        parse_result(RESULT_PREFIX + json.dumps({"encode_wall": 1.0}))


def test_start_up_is_the_whole_process_less_the_encode():
    run = Run("engine", 128, 1, wall=20.0, cpu=30.0, encode_wall=12.5, encode_cpu=24.0)
    assert run.figure("startup_wall") == pytest.approx(7.5)
    assert run.figure("startup_cpu") == pytest.approx(6.0)
    with pytest.raises(ValueError, match="negative"):
        Run("engine", 128, 1, wall=-1.0, cpu=1.0, encode_wall=0.5, encode_cpu=0.5)


def _runs() -> list[Run]:
    # engine CPU 10, 20 in rounds 1, 2; llm2vec 12, 30 (ratios 1.2, 1.5); sentence-transformers 5, 10 (0.5, 0.5)
    return [
        Run("engine", 64, 1, 10.0, 10.0, 8.0, 8.0),
        Run("llm2vec", 64, 1, 12.0, 12.0, 9.0, 9.0),
        Run("sentence-transformers", 64, 1, 5.0, 5.0, 4.0, 4.0),
        Run("engine", 64, 2, 20.0, 20.0, 16.0, 16.0),
        Run("llm2vec", 64, 2, 30.0, 30.0, 20.0, 20.0),
        Run("sentence-transformers", 64, 2, 10.0, 10.0, 8.0, 8.0),
    ]


def test_ratios_pair_each_peer_with_the_engine_round_by_round():
    table = ratio_table(_runs())
    llm2vec = next(line for line in table.splitlines() if "llm2vec" in line)
    st = next(line for line in table.splitlines() if "sentence-transformers" in line)
    # whole CPU: 12/10 = 1.20 and 30/20 = 1.50 -> min 1.20, median 1.35, max 1.50
    assert "1.20 / 1.35 / 1.50" in llm2vec
    assert llm2vec.split()[0] == "64" and "0.50 / 0.50 / 0.50" in st


def test_a_round_without_the_engine_is_left_out_of_the_ratios():
    runs = [run for run in _runs() if not (run.contestant == "engine" and run.round == 2)]
    llm2vec = next(line for line in ratio_table(runs).splitlines() if "llm2vec" in line)
    assert "1.20 / 1.20 / 1.20" in llm2vec


def test_the_run_table_gives_min_median_max_per_contestant():
    table = run_table(_runs())
    engine = next(line for line in table.splitlines() if " engine " in line)
    assert engine.split()[:2] == ["64", "engine"]
    assert "10.00 / 15.00 / 20.00" in engine  # whole CPU over the two rounds
    assert "2.00 / 3.00 / 4.00" in engine  # start-up CPU: 10-8 and 20-16


def test_agreement_is_the_row_wise_cosine():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 8))
    assert agreement(a, 3 * a) == pytest.approx((1.0, 1.0))
    b = a.copy()
    b[0] = -a[0]
    low, mean = agreement(a, b)
    assert low == pytest.approx(-1.0) and mean == pytest.approx(0.6)
    with pytest.raises(ValueError, match="shapes"):
        agreement(a, a[:4])


def test_the_engine_runs_as_the_users_command_with_the_peers_setting(tmp_path):
    command = contestant_command("engine", "m", tmp_path, tmp_path / "t.txt", tmp_path / "o.npy", None)
    assert command[1:3] == ["-m", "core.embed"]
    joined = " ".join(command)
    assert "--prompt none" in joined and "--pooling mean" in joined and "--precision fp32" in joined
    worker = contestant_command("sentence-transformers", "m", tmp_path, tmp_path / "t.txt", tmp_path / "o.npy", None)
    assert worker[0] == sys.executable and "--worker" in worker and "--batch-size" in worker
    with pytest.raises(ValueError, match="llm2vec"):
        contestant_command("llm2vec", "m", tmp_path, tmp_path / "t.txt", tmp_path / "o.npy", None)


@pytest.fixture
def new_format_folder(tiny_model_dir, tmp_path):
    """The tiny model's folder with a transformers-5 ``rope_parameters`` (theta 5e5) and pair-format merges."""
    folder = tmp_path / "new"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config.pop("rope_theta", None)
    config["rope_parameters"] = {"rope_theta": 500000.0, "rope_type": "default"}
    (folder / "config.json").write_text(json.dumps(config))
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    merges = tokenizer["model"].get("merges") or []
    tokenizer["model"]["merges"] = [m.split(" ", 1) if isinstance(m, str) else m for m in merges]
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    return folder


def test_the_old_format_copy_carries_rope_theta_string_merges_and_linked_weights(new_format_folder, tmp_path):
    target = write_old_format_copy(new_format_folder, tmp_path / "old")
    config = json.loads((target / "config.json").read_text())
    assert config["rope_theta"] == 500000.0 and config["torch_dtype"]
    merges = json.loads((target / "tokenizer.json").read_text())["model"].get("merges") or []
    assert all(isinstance(m, str) and " " in m for m in merges)
    settings = json.loads((target / "tokenizer_config.json").read_text())
    assert settings["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert settings["model_input_names"] == ["input_ids", "attention_mask"]
    weights = list(target.glob("*.safetensors"))
    assert weights and all(p.is_symlink() and p.resolve().parent == new_format_folder.resolve() for p in weights)
    assert not list(tmp_path.glob(".old.*"))  # no staging folder left behind


def test_the_old_format_tokenizer_gives_the_same_ids(new_format_folder, tmp_path):
    from tokenizers import Tokenizer

    target = write_old_format_copy(new_format_folder, tmp_path / "old")
    new = Tokenizer.from_file(str(new_format_folder / "tokenizer.json"))
    old = Tokenizer.from_file(str(target / "tokenizer.json"))
    for text in ("The quick brown fox.", "what is the boiling point of water at high altitude?"):
        assert old.encode(text).ids == new.encode(text).ids


def test_the_old_format_copy_never_overwrites_and_needs_a_model_folder(new_format_folder, tmp_path):
    existing = tmp_path / "taken"
    existing.mkdir()
    (existing / "mine.txt").write_text("keep")
    with pytest.raises(ConfigError, match="already exists"):
        write_old_format_copy(new_format_folder, existing)
    assert (existing / "mine.txt").read_text() == "keep"
    (new_format_folder / "tokenizer.json").unlink()
    with pytest.raises(ConfigError, match=r"no tokenizer\.json"):
        write_old_format_copy(new_format_folder, tmp_path / "other")


# The tests run under a throw-away cache folder: look for the environment where the bench made it.
PEER_VENV = Path(os.environ["EMBEDDING_LENS_USER_HOME"]) / "peers" / peer_venv_dir().name


@pytest.mark.slow
@pytest.mark.skipif(
    not (PEER_VENV / "embedding-lens-peer.json").is_file(),
    reason="llm2vec's environment is absent (python -m core.bench --peers --setup-only creates it)",
)
def test_llm2vec_in_its_environment_agrees_with_the_engine(new_format_folder, tmp_path):
    from core.bench.peers import _venv_python

    old = write_old_format_copy(new_format_folder, tmp_path / "old")
    texts = ["The quick brown fox jumps.", "what is the boiling point of water", "A short one."]
    source = tmp_path / "texts.txt"
    source.write_text("\n".join(texts) + "\n")
    output = tmp_path / "out.npy"
    command = contestant_command("llm2vec", "tiny", old, source, output, _venv_python(PEER_VENV))
    done = subprocess.run(command, capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    vectors = np.load(output)
    assert parse_result(done.stdout)["shape"] == list(vectors.shape) and vectors.shape[0] == 3
    from core.encoding.encoder import Encoder

    # The folder the copy was made from (a rope_theta lost in the copy would show); the tiny tokenizer adds a BOS,
    # which llm2vec's mean leaves out: text_mean is its equal here (SmolLM2 adds none, so the bench uses mean).
    engine = Encoder(str(new_format_folder), prompt="none", pooling="text_mean", precision="fp32", cache=False)
    low, _ = agreement(engine.encode(texts), vectors)
    assert low > 0.9999
