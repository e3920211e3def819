"""Storage faults, concurrency and interruptions around ``python -m core.embed`` and its embedding cache."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from core.encoding.cache import EmbeddingCache
from tests.reliability.cases import Case, cases
from tests.reliability.conftest import CACHE_TIMEOUT_S


def english_like_sentences(count: int, seed: int) -> list[str]:
    """Distinct short sentences (tests/conftest.py is pytest's, so not imported here)."""
    rng = np.random.default_rng(seed)
    words = [
        "the",
        "a",
        "red",
        "old",
        "dog",
        "cat",
        "man",
        "woman",
        "runs",
        "reads",
        "sees",
        "in",
        "near",
        "garden",
        "river",
        "book",
        "city",
        "quickly",
    ]
    return [f"{i}: " + " ".join(rng.choice(words, size=int(rng.integers(5, 14)))) + "." for i in range(count)]


SENTENCES = english_like_sentences(40, seed=5)


@pytest.fixture
def texts_file(tmp_path) -> Path:
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def reference(tiny_encoder) -> np.ndarray:
    """The vectors of SENTENCES computed in this process without any cache."""
    return tiny_encoder.encode(SENTENCES)


def fill_cache(path: Path, count: int = 2000) -> None:
    """A cache of unrelated entries, checkpointed into the main file as after a clean exit."""
    cache = EmbeddingCache(path)
    vectors = np.random.default_rng(1).standard_normal((count, 32)).astype(np.float32)
    cache.put_many("other settings", [f"text {i}" for i in range(count)], vectors)
    cache.close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def damage(path: Path, how: str) -> None:
    if how == "directory":
        path.mkdir()
    elif how == "text-file":
        path.write_text("not a database\n" * 100)
    elif how == "random-bytes":
        path.write_bytes(np.random.default_rng(2).bytes(256 * 1024))
    else:
        fill_cache(path)
        size = path.stat().st_size
        if how == "truncated":
            os.truncate(path, size // 2)
        else:
            with path.open("r+b") as handle:
                # Past the header page, over the tables' root pages, which every lookup reads: damage in pages
                # a run never reads goes unseen (and harms nothing: each entry carries its own SHA-256).
                handle.seek(4096)
                handle.write(np.random.default_rng(3).bytes(8192))


def cache_entries(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT count(*) FROM vectors").fetchone()[0]
    finally:
        db.close()


def damaged(how: str, given: str) -> Case:
    return Case(
        f"cache-{how}",
        given,
        "a warning: the cache is damaged, moved to `embeddings.sqlite.corrupt-<time>`, a fresh cache started; "
        "`wrote ...`",
        "the damaged file under its new name; a fresh cache with this run's vectors; vectors equal to an uncached run",
        "storage",
        {"how": how},
    )


@cases(
    damaged("truncated", "the embedding cache truncated to half its size"),
    damaged("overwritten", "the embedding cache with 8 KB after its first page overwritten"),
    damaged("random-bytes", "the embedding cache replaced by random bytes"),
    damaged("text-file", "the embedding cache replaced by a text file"),
    damaged("directory", "a directory where the embedding cache should be"),
)
def test_a_damaged_cache_is_set_aside_and_rebuilt(embed, texts_file, cache_file, reference, case):
    damage(cache_file, case.data["how"])
    outcome = embed("--precision", "fp32", input=texts_file)
    assert outcome.code == 0, outcome.stderr
    assert "Traceback" not in outcome.stderr
    aside = sorted(cache_file.parent.glob("embeddings.sqlite.corrupt-*"))
    assert [p.name for p in aside if not p.name.endswith(("-wal", "-shm"))], list(cache_file.parent.iterdir())
    assert f"{cache_file} is damaged" in outcome.stderr and str(aside[0]) in outcome.stderr
    np.testing.assert_allclose(np.load(outcome.output), reference, rtol=0, atol=1e-5)
    assert cache_entries(cache_file) == len(SENTENCES)


@cases(
    Case(
        "cache-corrupt-entries",
        "cached vectors whose bytes were changed (every entry of a previous run zeroed)",
        "a warning `40 corrupt entries in the embedding cache ...: recomputing them`; `wrote ...`",
        "correct vectors, recomputed and written back over the corrupt entries",
        "storage",
    )
)
def test_corrupt_entries_are_recomputed_with_a_notice(embed, texts_file, cache_file, reference, case):
    assert embed("--precision", "fp32", input=texts_file).code == 0
    db = sqlite3.connect(cache_file)
    with db:
        db.execute("UPDATE vectors SET vec = zeroblob(length(vec))")
    db.close()
    outcome = embed("--precision", "fp32", input=texts_file)
    assert outcome.code == 0, outcome.stderr
    assert f"{len(SENTENCES)} corrupt entries in the embedding cache" in outcome.stderr
    np.testing.assert_allclose(np.load(outcome.output), reference, rtol=0, atol=1e-5)
    cache = EmbeddingCache(cache_file)
    assert cache._select([]) == {}  # opens cleanly
    db = sqlite3.connect(cache_file)
    assert db.execute("SELECT count(*) FROM vectors WHERE vec = zeroblob(length(vec))").fetchone()[0] == 0
    db.close()


@cases(
    Case(
        "cache-locked",
        "the embedding cache locked by another process for the whole run",
        f"after waiting (30 s; {CACHE_TIMEOUT_S} s here via EMBEDDING_LENS_CACHE_TIMEOUT) a warning "
        "`... is locked by another process ...: embedding without the cache`; `wrote ...`",
        "the vectors; the cache as the other process left it",
        "storage",
    )
)
def test_a_locked_cache_is_waited_for_then_skipped(embed, texts_file, cache_file, reference, case):
    fill_cache(cache_file, 10)
    holder = sqlite3.connect(cache_file, isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        outcome = embed("--precision", "fp32", input=texts_file)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert outcome.code == 0, outcome.stderr
    assert "is locked by another process" in outcome.stderr and "embedding without the cache" in outcome.stderr
    np.testing.assert_allclose(np.load(outcome.output), reference, rtol=0, atol=1e-5)
    assert cache_entries(cache_file) == 10


@cases(
    Case(
        "cache-truncation-on-hit",
        "a text longer than `--max-length 64`, embedded twice (the second time from the cache)",
        "both runs warn `1 of 2 texts exceeded max_length=64 tokens and were truncated`",
        "both sidecar JSONs say `truncated: 1`",
        "storage",
    )
)
def test_truncation_is_reported_on_cache_hits(embed, tmp_path, cache_file, case):
    long_text = " ".join(english_like_sentences(30, seed=9)).replace("\n", " ")
    input = tmp_path / "long.txt"
    input.write_text(f"{long_text}\nA cat sleeps.\n", encoding="utf-8")
    for run in ("computed", "cached"):
        outcome = embed("--max-length", "64", input=input, output=tmp_path / run / "v.npy")
        assert outcome.code == 0, outcome.stderr
        assert "1 of 2 texts exceeded max_length=64 tokens" in outcome.stderr, run
        assert json.loads(outcome.output.with_suffix(".json").read_text())["truncated"] == 1, run
    assert cache_entries(cache_file) == 2


@cases(
    Case(
        "two-processes-one-cache",
        "two `core.embed` runs at once on the same 400 texts and the same cache",
        "both `wrote ...`",
        "equal vectors from both; one cache entry per text",
        "concurrency",
    )
)
def test_two_processes_share_a_cache(start, tmp_path, cache_file, case):
    input = tmp_path / "many.txt"
    input.write_text("\n".join(english_like_sentences(400, seed=11)) + "\n", encoding="utf-8")
    runs = [start("--precision", "fp32", input=input, output=tmp_path / name / "v.npy") for name in ("a", "b")]
    codes = [run.wait() for run in runs]
    assert codes == [0, 0], [run.stderr for run in runs]
    assert all("Traceback" not in run.stderr and "locked" not in run.stderr for run in runs)
    np.testing.assert_array_equal(np.load(tmp_path / "a" / "v.npy"), np.load(tmp_path / "b" / "v.npy"))
    assert cache_entries(cache_file) == 400


def interrupted(signal_name: str, sees: str) -> Case:
    return Case(
        f"{signal_name.lower()}-mid-run",
        f"{signal_name} to `core.embed` while it embeds 2,000 texts",
        sees,
        "no output file, no temporary file, a cache that opens cleanly; the same command then completes",
        "interrupt",
        {"signal": getattr(signal, signal_name)},
    )


@cases(
    interrupted("SIGINT", "`interrupted: nothing half-written was kept; the same command resumes.`, exit 130"),
    interrupted("SIGKILL", "the shell's `Killed` (exit 137)"),
)
def test_an_interrupted_run_leaves_nothing_half_written(start, embed, tmp_path, cache_file, case):
    input = tmp_path / "corpus.txt"
    input.write_text("\n".join(english_like_sentences(2000, seed=13)) + "\n", encoding="utf-8")
    output = tmp_path / "out" / "v.npy"
    run = start("--precision", "fp32", input=input, output=output)
    run.wait_for_stderr("embedding")
    time.sleep(0.3)
    os.kill(run.pid, case.data["signal"])
    code = run.wait()
    if case.data["signal"] == signal.SIGINT:
        assert code == 130, run.stderr
        assert "interrupted: nothing half-written was kept" in run.stderr and "Traceback" not in run.stderr
    else:
        assert code == -signal.SIGKILL
    assert not output.parent.exists() or list(output.parent.iterdir()) == []
    again = embed("--precision", "fp32", input=input, output=output)
    assert again.code == 0, again.stderr
    assert "damaged" not in again.stderr
    assert np.load(output).shape == (2000, 32)
    assert sorted(p.name for p in output.parent.iterdir()) == ["v.json", "v.npy"]


@cases(
    Case(
        "real-entry-point",
        "`python -m core.embed --input texts.txt --output out/v.npy` under umask 022",
        "`wrote out/v.npy (40, 32) in ... s`",
        "the .npy and its sidecar JSON, both mode 0644 (the umask's, not 0600)",
        "input",
    )
)
def test_the_plain_command(tiny_model_dir, home, texts_file, tmp_path, reference, case):
    """One run through the interpreter's own ``-m``, no fork server: what every other case stands for."""
    output = tmp_path / "out" / "v.npy"
    env = {**os.environ, "EMBEDDING_LENS_HOME": str(home), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "core.embed", "--model", str(tiny_model_dir), "--precision", "fp32"]
    result = subprocess.run(
        [*command, "--input", str(texts_file), "--output", str(output)],
        env=env,
        cwd=Path(__file__).parents[2],
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=lambda: os.umask(0o022),
    )
    assert result.returncode == 0, result.stderr
    assert f"wrote {output} (40, 32)" in result.stdout
    np.testing.assert_allclose(np.load(output), reference, rtol=0, atol=1e-5)
    for path in (output, output.with_suffix(".json")):
        assert oct(path.stat().st_mode & 0o777) == oct(0o644)
