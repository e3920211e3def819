"""core.data.dataset: a Dataset's hash is the sha256 of its canonical jsonl form."""

from __future__ import annotations

import hashlib

import pytest

from core.data.dataset import Dataset, content_sha256, jsonl_lines


def test_content_hash_is_the_canonical_jsonl():
    texts, labels = ["caf\xe9 au lait", 'a "quoted" text'], ["x", "y"]
    lines = list(jsonl_lines(texts, labels))
    assert lines[0] == '{"text": "caf\xe9 au lait", "label": "x"}\n'  # non-ASCII kept, not escaped
    assert content_sha256(texts, labels) == hashlib.sha256("".join(lines).encode()).hexdigest()
    assert list(jsonl_lines(texts, None))[1] == '{"text": "a \\"quoted\\" text"}\n'
    assert content_sha256(texts, None) != content_sha256(texts, labels)


def test_dataset_checks_its_labels():
    ds = Dataset("d", ["a", "b", "c"], ["x", "y", "x"], content_sha256(["a", "b", "c"], ["x", "y", "x"]), "test")
    assert len(ds) == 3 and ds.n_labels() == 2
    assert Dataset("u", ["a"], None, "", "test").n_labels() == 0
    with pytest.raises(ValueError, match="2 texts but 1 labels"):
        Dataset("bad", ["a", "b"], ["x"], "", "test")
