"""core.pairs.guard: overlap of pairs with evaluation-task texts (exact and shared word runs), warn vs refuse."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from core.pairs import guard as G
from core.runtime.errors import DataUnavailableError, PairFileError, run_cli

DOC = "the quick brown fox jumps over the lazy dog while seven wizards quietly judge boxing matches at noon today"
TASK_TEXTS = {
    "20ng-p2p": [DOC, "an unrelated post about engine oil"],
    "trec-fine": ["Who wrote Hamlet ?"],
    "fortunes": ["Murphy was an optimist."],
}


@pytest.fixture
def fake_tracks(monkeypatch):
    """Fingerprints of small synthetic tasks; the other tasks are 'not prepared'."""

    def fingerprint(name, data_dir, span):
        if name not in TASK_TEXTS:
            raise DataUnavailableError(f"{name} is not prepared; run `python -m core.data prepare --tasks {name}`")
        return G.fingerprint_texts(name, TASK_TEXTS[name], span)

    monkeypatch.setattr(G, "_task_fingerprint", fingerprint)


def test_normalise_text_ignores_case_punctuation_and_spacing():
    assert G.normalise_text("  Who WROTE   Hamlet?! ") == G.normalise_text("who wrote hamlet") == "who wrote hamlet"


def test_span_hashes_stay_inside_each_text():
    hashes, owner = G.span_hashes(["a b c", "d e f g"], span=3)
    assert owner.tolist() == [0, 1, 1]  # no window runs from the first text into the second
    again, _ = G.span_hashes(["x d e f"], span=3)
    assert again[0] != hashes[1] and again[1] == hashes[1]  # same words, same hash; different words differ
    assert G.span_hashes(["too short"], span=3)[0].size == 0


def test_exact_and_span_overlaps_are_counted_per_task(fake_tracks, caplog):
    pairs = [
        {"anchor": "who wrote HAMLET", "positive": "Which author wrote Hamlet?"},  # exact match (normalised)
        {"anchor": "a crop: " + " ".join(DOC.split()[2:16]), "positive": "something else"},  # 14 shared words
        {"anchor": "Clean text here.", "positive": "Also clean.", "negative": "Murphy was an optimist!"},
        {"anchor": "Nothing to see", "positive": "Nothing at all"},
    ]
    with caplog.at_level(logging.WARNING, logger="core.pairs.guard"):
        report = G.check_pairs_against_tracks(pairs, tasks="20ng-p2p,trec-fine,fortunes,r8")
    assert report.exact == {"trec-fine": 1, "fortunes": 1}  # the negative counts too
    assert report.span == {"20ng-p2p": 1}
    assert report.overlapping == [0, 1, 2]
    assert report.tasks_checked == ["20ng-p2p", "trec-fine", "fortunes"] and list(report.tasks_missing) == ["r8"]
    assert "3 of 4 pairs overlap" in caplog.text and "r8" in caplog.text
    assert json.loads(json.dumps(report.to_dict()))["overlapping_pairs"] == 3


def test_short_shared_runs_are_not_overlap(fake_tracks):
    pairs = [{"anchor": " ".join(DOC.split()[:11]) + " and more", "positive": "x"}]  # 11 < 12 words shared
    assert G.check_pairs_against_tracks(pairs, tasks="20ng-p2p").clean


def test_strict_refuses_with_counts_and_the_fix(fake_tracks):
    pairs = [{"anchor": "Who wrote Hamlet?", "positive": "Hamlet's author?"}]
    with pytest.raises(PairFileError, match=r"1 of 1 pairs overlap.*trec-fine 1 equal.*Fix: build the pairs"):
        G.check_pairs_against_tracks(pairs, strict=True, tasks="trec-fine")
    clean = [{"anchor": "A fine day.", "positive": "A nice day."}]
    assert G.check_pairs_against_tracks(clean, strict=True, tasks="trec-fine").clean
    with pytest.raises(PairFileError, match="prepare the missing tasks"):
        G.check_pairs_against_tracks(clean, strict=True, tasks="trec-fine,r8")


def test_unknown_task_names_are_refused():
    with pytest.raises(PairFileError, match="unknown evaluation task"):
        G.evaluation_tasks("trec-fine,not-a-task")
    assert "emoji-names" in G.evaluation_tasks("transfer") and "r8" not in G.evaluation_tasks("transfer")


def test_cli_drops_overlapping_pairs_and_refuses_in_strict_mode(fake_tracks, tmp_path, capsys):
    path = tmp_path / "pairs.jsonl"
    rows = [{"anchor": "Who wrote Hamlet?", "positive": "x y"}, {"anchor": "fine", "positive": "good"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "clean.jsonl"
    argv = [
        str(path),
        "--tasks",
        "trec-fine",
        "--drop-overlap",
        "--out",
        str(out),
        "--report",
        str(tmp_path / "r.json"),
    ]
    assert run_cli(G.main, argv) == 0
    assert [json.loads(line)["anchor"] for line in out.read_text().splitlines()] == ["fine"]
    assert json.loads((tmp_path / "r.json").read_text())["exact"] == {"trec-fine": 1}
    assert run_cli(G.main, [str(path), "--tasks", "trec-fine", "--strict"]) == 2
    assert "refused" in capsys.readouterr().err


def test_fingerprint_spans_are_sorted_unique():
    fp = G.fingerprint_texts("t", [DOC, DOC])
    assert fp.n_texts == 2 and np.all(np.diff(fp.spans.view(np.uint64)) > 0)
