"""core.pairs.sources on the real pinned packages (fetched once into the cache; needs PyPI and npm the first time)."""

from __future__ import annotations

import pytest

from core.pairs.guard import normalise_text
from core.pairs.quality import is_english
from core.pairs.sources import PAIR_SOURCES, load_pair_source

pytestmark = pytest.mark.integration

# Sentences each pinned release yields with the current parsers (fixed: the packages are pinned).
EXPECTED = {"quotes": 306, "one-liners": 1683, "pyjokes": 283}


@pytest.mark.parametrize("name", list(PAIR_SOURCES))
def test_source_loads_from_its_pinned_package(name):
    texts, record = load_pair_source(name)
    assert len(texts) == EXPECTED[name] == record["texts"]
    assert record["version"] == PAIR_SOURCES[name].package.version and len(record["sha256"]) == 64
    assert len({normalise_text(t) for t in texts}) == len(texts)
    assert sum(map(is_english, texts)) > 0.95 * len(texts)
