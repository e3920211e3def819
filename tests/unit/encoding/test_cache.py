"""The embedding cache: keys, round trips, corruption detection, and the encoder served from it."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from core.encoding.cache import EmbeddingCache, settings_key
from core.encoding.pooling import Pooling
from core.encoding.prompts import resolve_prompt
from core.runtime.paths import cache_root

# ----- the cache on its own


def test_settings_key_ignores_order_but_not_values():
    a = settings_key({"prompt": "{text}", "mode": "mean", "layer": "-1"})
    assert a == settings_key({"layer": "-1", "mode": "mean", "prompt": "{text}"})
    assert a != settings_key({"prompt": "{text}", "mode": "mean", "layer": "-2"})
    assert a != settings_key({"prompt": "{text}", "mode": "mean"})
    assert len(a) == 64 and int(a, 16) >= 0


def test_entry_key_separates_settings_and_text():
    assert EmbeddingCache.entry_key("ab", "c") != EmbeddingCache.entry_key("a", "bc")
    assert EmbeddingCache.entry_key("s", "t") == EmbeddingCache.entry_key("s", "t")


def test_round_trip_keeps_exact_float32_vectors(tmp_path):
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    vectors = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    cache.put_many("s", ["a", "b", "c"], vectors)
    found = cache.get_many("s", ["c", "missing", "a"])
    assert set(found) == {0, 2}
    assert found[0].dtype == np.float32
    np.testing.assert_array_equal(found[0], vectors[2])
    np.testing.assert_array_equal(found[2], vectors[0])
    assert cache.get_many("other settings", ["a"]) == {}
    assert cache.corrupt_entries == 0


def test_returned_vectors_are_writable_copies(tmp_path):
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    cache.put_many("s", ["a"], np.ones((1, 4), dtype=np.float32))
    vector = cache.get_many("s", ["a"])[0]
    vector[0] = 7.0  # would raise on a read-only buffer view
    np.testing.assert_array_equal(cache.get_many("s", ["a"])[0], np.ones(4, dtype=np.float32))


def test_float64_input_is_stored_as_float32(tmp_path):
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    cache.put_many("s", ["a"], np.array([[0.1, 0.2]], dtype=np.float64))
    np.testing.assert_array_equal(cache.get_many("s", ["a"])[0], np.array([0.1, 0.2], dtype=np.float32))


def test_entries_persist_across_connections(tmp_path):
    path = tmp_path / "c.sqlite"
    first = EmbeddingCache(path)
    first.put_many("s", ["a"], np.full((1, 3), 2.5, dtype=np.float32))
    first.close()
    np.testing.assert_array_equal(EmbeddingCache(path).get_many("s", ["a"])[0], np.full(3, 2.5, dtype=np.float32))


def test_many_texts_are_looked_up_in_chunks(tmp_path):
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    texts = [f"text {i}" for i in range(1234)]
    vectors = np.arange(1234 * 2, dtype=np.float32).reshape(1234, 2)
    cache.put_many("s", texts, vectors)
    found = cache.get_many("s", texts)
    assert len(found) == 1234
    np.testing.assert_array_equal(np.stack([found[i] for i in range(1234)]), vectors)


def test_put_overwrites_an_existing_entry(tmp_path):
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    cache.put_many("s", ["a"], np.zeros((1, 2), dtype=np.float32))
    cache.put_many("s", ["a"], np.ones((1, 2), dtype=np.float32))
    np.testing.assert_array_equal(cache.get_many("s", ["a"])[0], np.ones(2, dtype=np.float32))


def test_put_with_mismatched_lengths_raises(tmp_path):
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    with pytest.raises(ValueError):
        cache.put_many("s", ["a", "b"], np.zeros((1, 2), dtype=np.float32))


def test_default_path_lives_under_the_cache_root():
    cache = EmbeddingCache()
    assert cache.path == cache_root() / "embeddings.sqlite"
    assert Path.home() / ".cache" not in cache.path.parents  # the tests' isolated root, not the user's
    cache.close()


def overwrite_blob(path: Path, key: str, blob: bytes) -> None:
    """Replace an entry's vector bytes directly, keeping its stored sha256 (and dim)."""
    db = sqlite3.connect(path)
    with db:
        changed = db.execute("UPDATE vectors SET vec = ? WHERE key = ?", (blob, key)).rowcount
    db.close()
    assert changed == 1


@pytest.mark.parametrize("blob", [b"\x00" * 12, b"\x00" * 8, b""], ids=["same-length", "short", "empty"])
def test_corrupt_entry_is_counted_and_left_out(tmp_path, blob):
    path = tmp_path / "c.sqlite"
    cache = EmbeddingCache(path)
    cache.put_many("s", ["a", "b"], np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32))
    overwrite_blob(path, EmbeddingCache.entry_key("s", "a"), blob)
    found = cache.get_many("s", ["a", "b"])
    assert set(found) == {1}
    assert cache.corrupt_entries == 1


# ----- the encoder with a cache


@pytest.fixture
def cached_encoder(tiny_encoder_factory, tmp_path):
    return tiny_encoder_factory(cache=EmbeddingCache(tmp_path / "c.sqlite"))


def test_repeated_encode_is_served_from_the_cache(cached_encoder, forward_counter, sample_texts):
    backbone = cached_encoder.loaded.backbone
    with forward_counter(backbone) as first:
        computed = cached_encoder.encode(sample_texts, prompt="eol", pooling="last")
    with forward_counter(backbone) as second:
        served = cached_encoder.encode(sample_texts, prompt="eol", pooling="last")
    assert first.calls > 0 and second.calls == 0
    np.testing.assert_array_equal(served, computed)
    assert served.dtype == np.float32


def test_cached_vectors_equal_uncached_ones(cached_encoder, tiny_encoder, sample_texts):
    cached_encoder.encode(sample_texts, pooling="weighted")
    np.testing.assert_allclose(
        cached_encoder.encode(sample_texts, pooling="weighted"),
        tiny_encoder.encode(sample_texts, pooling="weighted"),
        rtol=0,
        atol=1e-6,
    )


def test_only_missing_texts_are_computed(cached_encoder, forward_counter, sample_texts):
    cached_encoder = cached_encoder.with_setting(prefix_reuse=False)  # rows counted are texts, no shared-prefix row
    cached_encoder.encode(sample_texts[:4])
    with forward_counter(cached_encoder.loaded.backbone) as counter:
        vectors = cached_encoder.encode(sample_texts)
    assert counter.rows == len(sample_texts) - 4
    np.testing.assert_allclose(vectors, cached_encoder.encode(sample_texts), rtol=0, atol=0)


def test_a_cache_file_shared_across_encoders_is_reused(tiny_encoder_factory, tmp_path, forward_counter, sample_texts):
    path = tmp_path / "shared.sqlite"
    first = tiny_encoder_factory(cache=path).encode(sample_texts)
    second_encoder = tiny_encoder_factory(cache=str(path))
    with forward_counter(second_encoder.loaded.backbone) as counter:
        second = second_encoder.encode(sample_texts)
    assert counter.calls == 0
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize(
    "change",
    [{"prompt": "cluster"}, {"pooling": "mean"}, {"layer": 1}, {"layer": "last2"}, {"pooling": "eos"}],
    ids=["prompt", "pooling", "layer", "layer-mean", "pooling-eos"],
)
def test_any_changed_setting_misses_the_cache(cached_encoder, forward_counter, sample_texts, change):
    base = {"prompt": "eol", "pooling": "last", "layer": -1}
    original = cached_encoder.encode(sample_texts, **base)
    with forward_counter(cached_encoder.loaded.backbone) as counter:
        changed = cached_encoder.encode(sample_texts, **{**base, **change})
    assert counter.calls > 0
    assert np.abs(changed - original).max() > 1e-4  # not the cached vectors of the old settings


def test_a_changed_max_length_misses_the_cache(tiny_encoder_factory, tmp_path, forward_counter, sample_texts):
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    tiny_encoder_factory(cache=cache, max_length=512).encode(sample_texts)
    shorter = tiny_encoder_factory(cache=cache, max_length=64)
    with forward_counter(shorter.loaded.backbone) as counter:
        shorter.encode(sample_texts)
    assert counter.calls > 0


def test_a_changed_attention_layer_misses_the_cache(tiny_encoder_factory, tmp_path, forward_counter, sample_texts):
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    last = tiny_encoder_factory(cache=cache, attention_layer=-1).encode(sample_texts, pooling="attention")
    first_layer = tiny_encoder_factory(cache=cache, attention_layer=0)
    with forward_counter(first_layer.loaded.backbone) as counter:
        vectors = first_layer.encode(sample_texts, pooling="attention")
    assert counter.calls > 0
    assert np.abs(vectors - last).max() > 1e-4


def test_corrupt_entry_is_detected_recomputed_and_repaired(cached_encoder, tiny_encoder, forward_counter, sample_texts):
    cached_encoder.encode(sample_texts, prompt="eol")
    settings = cached_encoder.settings(
        resolve_prompt("eol"),
        Pooling(cached_encoder.pooling, cached_encoder.layer, cached_encoder.attention_layer),
        False,
    )
    key = EmbeddingCache.entry_key(settings_key(settings), sample_texts[2])
    garbage = np.full(cached_encoder.dim, 1e6, dtype=np.float32).tobytes()  # a plausible length, wrong sha
    overwrite_blob(cached_encoder.cache.path, key, garbage)

    with forward_counter(cached_encoder.loaded.backbone) as counter:
        repaired = cached_encoder.encode(sample_texts, prompt="eol")
    assert cached_encoder.cache.corrupt_entries == 1
    assert counter.rows == 1  # only the corrupt text was recomputed
    fresh = tiny_encoder.encode(sample_texts, prompt="eol")
    np.testing.assert_allclose(repaired, fresh, rtol=0, atol=1e-6)
    assert np.abs(repaired).max() < 1e5

    with forward_counter(cached_encoder.loaded.backbone) as counter:
        again = cached_encoder.encode(sample_texts, prompt="eol")
    assert counter.calls == 0 and cached_encoder.cache.corrupt_entries == 1  # the entry was overwritten
    np.testing.assert_array_equal(again, repaired)


def test_empty_list_with_a_cache(cached_encoder):
    vectors = cached_encoder.encode([])
    assert vectors.shape == (0, cached_encoder.dim) and vectors.dtype == np.float32


# ----- a damaged or busy cache file never fails an embedding


def _filled(path: Path, count: int = 2000) -> np.ndarray:
    vectors = np.random.default_rng(1).standard_normal((count, 16)).astype(np.float32)
    cache = EmbeddingCache(path)
    cache.put_many("s", [f"t{i}" for i in range(count)], vectors)
    cache.close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in the main file, as after a clean exit
    db.close()
    return vectors


def _damage(path: Path, how: str) -> None:
    if how == "directory":
        path.mkdir()
        return
    if how == "not-a-database":
        path.write_text("these are not the vectors you are looking for\n" * 50)
        return
    if how == "random-bytes":
        path.write_bytes(np.random.default_rng(2).bytes(64 * 1024))
        return
    _filled(path)
    size = path.stat().st_size
    if how == "truncated":
        os.truncate(path, size // 2)
    else:  # one region in the middle overwritten
        with path.open("r+b") as handle:
            handle.seek(size // 2)
            handle.write(np.random.default_rng(3).bytes(8192))


@pytest.mark.parametrize("how", ["truncated", "overwritten-mid-file", "random-bytes", "not-a-database", "directory"])
def test_a_damaged_file_is_set_aside_and_a_fresh_cache_started(tmp_path, caplog, how):
    path = tmp_path / "embeddings.sqlite"
    _damage(path, how)
    cache = EmbeddingCache(path)
    texts = [f"t{i}" for i in range(2000)]
    found = cache.get_many("s", texts)  # damage deeper in the file shows on first use, not at open
    cache.put_many("s", ["new"], np.ones((1, 16), dtype=np.float32))
    assert cache.enabled and len(cache.set_aside) == 1 and found == {}
    aside = cache.set_aside[0]
    assert aside.name.startswith("embeddings.sqlite.corrupt-") and aside.exists()
    assert path.is_file() and path != aside
    np.testing.assert_array_equal(cache.get_many("s", ["new"])[0], np.ones(16, dtype=np.float32))
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert str(path) in warning and str(aside) in warning


def test_a_healthy_file_is_not_set_aside(tmp_path):
    path = tmp_path / "embeddings.sqlite"
    vectors = _filled(path, 50)
    cache = EmbeddingCache(path)
    found = cache.get_many("s", [f"t{i}" for i in range(50)])
    assert cache.set_aside == [] and len(found) == 50
    np.testing.assert_array_equal(found[49], vectors[49])


def test_a_locked_cache_is_waited_for_then_skipped(tmp_path, caplog):
    path = tmp_path / "embeddings.sqlite"
    _filled(path, 5)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        cache = EmbeddingCache(path, timeout=0.2)
        assert not cache.enabled
        assert cache.get_many("s", ["t0"]) == {}
        cache.put_many("s", ["x"], np.ones((1, 16), dtype=np.float32))  # a no-op, not an error
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert "locked by another process" in caplog.text and str(path) in caplog.text
    assert len(EmbeddingCache(path).get_many("s", ["t0", "x"])) == 1  # the file was left as it was


def test_the_timeout_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBEDDING_LENS_CACHE_TIMEOUT", "2.5")
    assert EmbeddingCache(tmp_path / "c.sqlite").timeout == 2.5


def test_corrupt_entries_are_reported_with_their_count(tmp_path, caplog):
    path = tmp_path / "c.sqlite"
    cache = EmbeddingCache(path)
    cache.put_many("s", ["a", "b", "c"], np.ones((3, 3), dtype=np.float32))
    for text in ("a", "c"):
        overwrite_blob(path, EmbeddingCache.entry_key("s", text), b"\x00" * 12)
    assert set(cache.get_many("s", ["a", "b", "c"])) == {1}
    assert "2 corrupt entries" in caplog.text


def test_truncation_is_counted_and_warned_on_cache_hits(tiny_encoder_factory, tmp_path, forward_counter):
    encoder = tiny_encoder_factory(cache=EmbeddingCache(tmp_path / "c.sqlite"), max_length=16, prompt="none")
    texts = ["The red dog runs quickly in the garden near the old house with a happy child. " * 3, "A cat sleeps."]
    with pytest.warns(UserWarning, match="1 of 2 texts exceeded"):
        computed = encoder.encode(texts)
    assert encoder.last_truncated == 1
    with forward_counter(encoder.loaded.backbone) as counter, pytest.warns(UserWarning, match="1 of 2 texts exceeded"):
        served = encoder.encode(texts)
    assert counter.calls == 0 and encoder.last_truncated == 1
    np.testing.assert_array_equal(served, computed)
    with forward_counter(encoder.loaded.backbone) as counter, pytest.warns(UserWarning, match="1 of 3 texts exceeded"):
        encoder.encode([*texts, "A new short one."])  # one computed, two served: still one truncated
    assert counter.rows == 1 and encoder.last_truncated == 1
