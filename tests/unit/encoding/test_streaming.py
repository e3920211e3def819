"""core.embed streams its input in chunks into shards, resumes, rejects foreign shards, and splits across ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.encoding.streaming import ShardStore, iter_text_chunks, shard_folder
from core.runtime.errors import UserFileError, run_cli
from tests.conftest import english_like_sentences

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return english_like_sentences(23, seed=7)


def _write_inputs(folder: Path, texts: list[str]) -> dict[str, Path]:
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"id": i, "text": t} for i, t in enumerate(texts)]
    paths = {suffix: folder / f"in.{suffix}" for suffix in ("txt", "csv", "jsonl", "parquet")}
    paths["txt"].write_text("\n\n".join(texts) + "\n", encoding="utf-8")  # blank lines are skipped
    pd.DataFrame(rows).to_csv(paths["csv"], index=False)
    paths["jsonl"].write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n" + json.dumps({"text": "  "}) + "\n")
    pd.DataFrame(rows).to_parquet(paths["parquet"])
    return paths


def test_every_format_reads_in_order_in_chunks(tmp_path, corpus):
    for suffix, path in _write_inputs(tmp_path, corpus).items():
        chunks = list(iter_text_chunks(path, "text", chunk_size=5))
        assert [len(c) for c in chunks] == [5, 5, 5, 5, 3], suffix
        assert [t for c in chunks for t in c] == corpus, suffix


def test_reader_errors_are_user_file_errors(tmp_path):
    """The chunks come from core.data.user_files.iter_texts: its messages (tested there), LensErrors."""
    from core.runtime.errors import ConfigError, LensError

    (tmp_path / "a.csv").write_text("id,body\n1,hello\n")
    with pytest.raises(UserFileError, match=r"no column 'text'; its columns are: id, body\..*--text-column NAME"):
        list(iter_text_chunks(tmp_path / "a.csv"))
    (tmp_path / "b.txt").write_text("\n  \n")
    with pytest.raises(UserFileError, match="has no non-empty lines") as error:
        list(iter_text_chunks(tmp_path / "b.txt"))
    assert isinstance(error.value, LensError)
    with pytest.raises(UserFileError, match="no such file"):
        list(iter_text_chunks(tmp_path / "none.txt"))
    with pytest.raises(ConfigError, match="chunk-size 0"):
        list(iter_text_chunks(tmp_path / "b.txt", chunk_size=0))


def _embed(model_dir: Path, source: Path, output: Path, *extra: str) -> int:
    from core.embed import main

    argv = ["--model", str(model_dir), "--input", str(source), "--output", str(output), "--no-cache"]
    return run_cli(main, [*argv, "--precision", "fp32", "--device", "cpu", "--chunk-size", "4", *extra])


def test_stream_equals_in_memory_encode(tiny_model_dir, tiny_encoder, tmp_path, corpus):
    paths = _write_inputs(tmp_path / "in", corpus)
    reference = tiny_encoder.encode(corpus)
    for suffix in ("txt", "parquet"):
        output = tmp_path / f"out-{suffix}.npy"
        assert _embed(tiny_model_dir, paths[suffix], output) == 0
        np.testing.assert_allclose(np.load(output), reference, atol=1e-6)
        assert not shard_folder(output).exists()  # shards removed once assembled
        meta = json.loads(output.with_suffix(".json").read_text())
        assert meta["shape"] == [len(corpus), reference.shape[1]] and meta["processes"] == 1


def test_killed_run_resumes_only_missing_chunks(tiny_model_dir, tmp_path, corpus, monkeypatch):
    import core.encoding.streaming as streaming

    source = _write_inputs(tmp_path / "in", corpus)["txt"]
    full = tmp_path / "full.npy"
    assert _embed(tiny_model_dir, source, full) == 0

    # Kill the run after two chunks: the assembly never happens and no output file appears.
    written: list[int] = []
    original = ShardStore.write

    def write_then_die(self, index, *args):
        original(self, index, *args)
        written.append(index)
        if len(written) == 2:
            raise KeyboardInterrupt

    output = tmp_path / "out" / "out.npy"
    monkeypatch.setattr(ShardStore, "write", write_then_die)
    assert _embed(tiny_model_dir, source, output) == 130
    parts = shard_folder(output)
    assert len(list(parts.glob("*.json"))) == 2
    assert list(output.parent.iterdir()) == []  # the shards wait under the cache root, not beside the output
    monkeypatch.setattr(ShardStore, "write", original)

    # A shard of the same chunk from other settings (another run key) is redone, not mixed in.
    ShardStore(parts, "another-run-key").write(1, "digest", np.ones((4, 32), np.float32), 0)

    computed: list[int] = []
    real_encode = streaming.Encoder.encode

    def counting_encode(self, texts, **kwargs):
        computed.append(len(texts))
        return real_encode(self, texts, **kwargs)

    monkeypatch.setattr(streaming.Encoder, "encode", counting_encode)
    assert _embed(tiny_model_dir, source, output) == 0
    assert computed == [4, 4, 4, 4, 3]  # chunk 0 kept; 1 (foreign) and 2..5 (missing) embedded
    np.testing.assert_array_equal(np.load(output), np.load(full))


def test_corrupt_shard_is_redone(tiny_model_dir, tmp_path, corpus, monkeypatch):
    source = _write_inputs(tmp_path / "in", corpus)["txt"]
    output = tmp_path / "out.npy"
    parts = shard_folder(output)
    original = ShardStore.write
    count = []

    def write_then_die(self, index, *args):
        original(self, index, *args)
        count.append(index)
        if len(count) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(ShardStore, "write", write_then_die)
    assert _embed(tiny_model_dir, source, output) == 130
    monkeypatch.setattr(ShardStore, "write", original)
    shard = parts / "chunk-000001.npy"
    shard.write_bytes(shard.read_bytes()[:-8] + b"\1" * 8)
    assert _embed(tiny_model_dir, source, output) == 0
    reference = tmp_path / "ref.npy"
    assert _embed(tiny_model_dir, source, reference) == 0
    np.testing.assert_array_equal(np.load(output), np.load(reference))


def test_two_processes_equal_one(tiny_model_dir, tiny_encoder, tmp_path, corpus):
    """torchrun with 2 CPU processes (gloo): chunks split across ranks, rank 0 assembles in input order."""
    source = _write_inputs(tmp_path / "in", corpus)["jsonl"]
    output = tmp_path / "two.npy"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command += ["-m", "core.embed", "--model", str(tiny_model_dir), "--input", str(source), "--output", str(output)]
    command += ["--no-cache", "--precision", "fp32", "--device", "cpu", "--chunk-size", "3"]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 process(es)" in done.stdout
    np.testing.assert_allclose(np.load(output), tiny_encoder.encode(corpus), atol=1e-4)
