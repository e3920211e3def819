"""The pairs a run trains on: cleaned (core.pairs.clean), refused when too few, truncated and counted."""

from __future__ import annotations

import json
import logging

import pytest

from core.pairs.clean import clean_pairs, pairs_fingerprint
from core.runtime.errors import TrainError
from core.training.trainer import Trainer
from tests.unit.training.common import WORDS, make_config


@pytest.mark.slow
def test_degenerate_pairs_are_dropped_and_counted_or_refused(tiny_dir, pair_file, tmp_path, caplog):
    """Issue 16 #4: sixteen identical pairs trained at loss ln(batch) and wrote an adapter."""
    sixteen = tmp_path / "sixteen.jsonl"
    sixteen.write_text((json.dumps({"anchor": "the cat runs", "positive": "a cat runs"}) + "\n") * 16)
    with pytest.raises(TrainError, match=r"only 1 usable pair\(s\) .*15 duplicate pair\(s\).*lower --batch-size"):
        Trainer(make_config(tiny_dir, sixteen), tmp_path / "a")
    assert not (tmp_path / "a").exists()
    # Without "method": "dropout", an anchor equal to its positive is a trivial positive: dropped.
    echoes = tmp_path / "echoes.jsonl"
    echoes.write_text("".join(json.dumps({"anchor": f"the cat {w}", "positive": f"the cat {w}"}) + "\n" for w in WORDS))
    with pytest.raises(TrainError, match=r"only 0 usable .*35 pair\(s\) whose anchor equals the positive.*dropout"):
        Trainer(make_config(tiny_dir, echoes), tmp_path / "b")
    # A few duplicates and echoes among good pairs: dropped, said, counted in the card.
    rows = [json.loads(line) for line in pair_file.read_text().splitlines()]
    mixed = tmp_path / "mixed.jsonl"
    extra = [rows[0], rows[1], {"anchor": "same text", "positive": "same text"}]
    mixed.write_text("".join(json.dumps(row) + "\n" for row in rows + extra))
    # The pair-quality report core.pairs wrote beside the file goes into the card and its README.
    quality = {
        "sources": [{"source": "quotes", "package": "inspirational-quotes", "version": "2.0.1", "texts": 43}],
        "counts": {"kept": 43, "source_texts": 50, "steps": [{"filter": "length_ratio", "dropped": 7}]},  # 43 lines
        "examples": [{"anchor": "the cat runs", "positive": "a cat runs"}],
    }
    (tmp_path / "mixed.report.json").write_text(json.dumps(quality))
    with caplog.at_level(logging.WARNING, logger="core.training"):
        trainer = Trainer(make_config(tiny_dir, mixed, steps=1), tmp_path / "c")
    assert len(trainer.pairs) == 40
    assert "dropped 2 duplicate pair(s)" in caplog.text and "dropped 1 pair(s) whose anchor" in caplog.text
    card = trainer.train()
    assert (card["data"]["pairs"], card["data"]["duplicates_dropped"], card["data"]["identical_dropped"]) == (40, 2, 1)
    assert card["data"]["quality"] == quality
    readme = (tmp_path / "c" / "README.md").read_text()
    assert "## Training pairs" in readme and "| quotes | inspirational-quotes | 2.0.1 |  | 43 |" in readme
    assert "| length_ratio | 7 |" in readme and "| the cat runs | a cat runs |" in readme
    # A report of other pairs (the file edited since) is left out, with a warning.
    mixed.write_text("".join(json.dumps(row) + "\n" for row in rows[:-1] + extra))
    with caplog.at_level(logging.WARNING, logger="core.training"):
        card = Trainer(make_config(tiny_dir, mixed, steps=1), tmp_path / "d").train()
    assert card["data"]["quality"] is None and "describes 43 pairs, " in caplog.text


def test_clean_pairs_keeps_dropout_views_and_first_occurrences():
    pairs = [
        {"anchor": "a", "positive": "b", "id": 1},
        {"anchor": "a", "positive": "b", "id": 2},
        {"anchor": "b", "positive": "a", "id": 3},
        {"anchor": "c", "positive": "c", "method": "dropout"},
        {"anchor": "c", "positive": "c", "method": "dropout"},
        {"anchor": "d", "positive": "d", "method": "augment"},
    ]
    kept, dropped = clean_pairs(pairs)
    assert [p.get("id", p["anchor"]) for p in kept] == [1, 3, "c"]
    assert (dropped.duplicates, dropped.identical) == (2, 1)


@pytest.mark.slow
def test_long_pairs_are_truncated_and_counted(tiny_dir, tmp_path):
    path = tmp_path / "long.jsonl"
    long_text = " ".join(WORDS * 3)
    rows = [{"anchor": long_text if i < 3 else f"the dog {w}", "positive": f"a cat {w}"} for i, w in enumerate(WORDS)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    trainer = Trainer(make_config(tiny_dir, path, max_length=40, prompt="none"), tmp_path / "run")
    assert trainer.truncated == 3
    assert max(len(item.input_ids) for item in trainer.anchors) <= 40


def test_the_fingerprint_follows_the_texts_their_order_and_hard_negatives():
    pairs = [{"anchor": "a", "positive": "b", "id": 1}, {"anchor": "c", "positive": "d"}]
    same_texts = [{"anchor": "a", "positive": "b", "source": "x"}, {"anchor": "c", "positive": "d"}]
    assert pairs_fingerprint(pairs) == pairs_fingerprint(same_texts)  # other keys do not count
    assert pairs_fingerprint(pairs) != pairs_fingerprint(pairs[::-1])
    assert pairs_fingerprint(pairs) != pairs_fingerprint([{**pairs[0], "negative": "e"}, pairs[1]])
