"""General sentences for LLM-written pairs, from pinned packages outside both evaluation tracks.

The paper's pairs are paraphrases of general text. The local track (20 Newsgroups, Reuters, TREC) and
the transfer track (emoji names, BSD fortunes, WordNet) are evaluation corpora, and the Bible is a pair
source of its own, so none of them may feed these sentences (leave-one-corpus-out). Each source here is
read out of one pinned, SHA-256-checked package with :class:`core.data.transfer.TransferStore`:

- ``quotes``: inspirational quotes (npm ``inspirational-quotes``, MIT);
- ``one-liners``: one-line jokes, tags with offensive content left out (npm ``one-liner-joke``, MIT);
- ``pyjokes``: programmer and Chuck Norris one-liners in English (PyPI ``pyjokes``, BSD-3-Clause code,
  jokes CC BY-SA 3.0).

``python -m core.pairs --source quotes --method paraphrase`` uses them; ``load_pair_source`` returns the
texts with the provenance record (package, version, SHA-256, licence) that the pair report lists.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from core.data.transfer import NpmSpec, NpmStore, PackageSpec, TransferStore
from core.data.wheels import WheelSpec, WheelStore
from core.pairs.guard import normalise_text
from core.runtime.errors import DataError

INSPIRATIONAL_QUOTES = NpmSpec(
    "inspirational-quotes", "2.0.1", "c7beda673e9d1a85b98e177241894926f9d69ec169a88570c359fa1a9f4ebdb6"
)
ONE_LINER_JOKE = NpmSpec("one-liner-joke", "1.2.2", "c4b63bbd223c4acfb9f68b0190d9a8f6ffcf82c2813e9f616364c1f1090f3ea4")
PYJOKES = WheelSpec("pyjokes", "0.8.3", "12836e61bc7a2c1ff302604a040f0f63ac36c5c947c20319fcb5d1ab37bac46e")

SOURCE_WHEELS: dict[str, WheelSpec] = {PYJOKES.name: PYJOKES}

# one-liner-joke tags whose jokes are sexual, insulting or about groups of people: not training text.
EXCLUDED_JOKE_TAGS = frozenset(
    {"dirty", "sex", "flirty", "racist", "rude", "insults", "gay", "black", "blonde", "ugly", "fat", "stupid"}
)
MIN_WORDS = 4


# Typographic punctuation as ASCII, so the language filter judges words, not quote marks.
_ASCII_PUNCTUATION = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-",
                                    "\u2014": " - ", "\u2026": "...", "\u00a0": " "})  # fmt: skip


def _clean(text: str) -> str:
    return " ".join(str(text).translate(_ASCII_PUNCTUATION).split())


def _keep(text: str) -> bool:
    return len(text.split()) >= MIN_WORDS


def _json_list(files: Mapping[str, bytes], what: str, items: str) -> list[Any]:
    """The one member of ``files`` read as a JSON list (UTF-8, BOM allowed)."""
    (data,) = files.values()
    try:
        entries = json.loads(data.decode("utf-8-sig"))
    except ValueError as exc:
        raise DataError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(entries, list):
        raise DataError(f"{what}: expected a list of {items}")
    return entries


def parse_inspirational_quotes(files: Mapping[str, bytes]) -> list[str]:
    """The ``text`` of every quote in ``data/data.json`` (a list of ``{"text", "from"}``; UTF-8 with a BOM)."""
    entries = _json_list(files, "inspirational-quotes data.json", "quotes")
    return [t for e in entries if isinstance(e, dict) and _keep(t := _clean(e.get("text", "")))]


def parse_one_liner_jokes(files: Mapping[str, bytes]) -> list[str]:
    """Joke bodies of ``jokes.json`` (``{"body", "tags"}``) whose tags avoid :data:`EXCLUDED_JOKE_TAGS`."""
    texts = []
    for entry in _json_list(files, "one-liner-joke jokes.json", "jokes"):
        if not isinstance(entry, dict) or EXCLUDED_JOKE_TAGS & set(entry.get("tags") or ()):
            continue
        if _keep(text := _clean(entry.get("body", ""))):
            texts.append(text)
    return texts


def parse_pyjokes(files: Mapping[str, bytes]) -> list[str]:
    """The string lists assigned at the top of ``pyjokes/jokes_en.py``, read with ``ast`` (never imported)."""
    (data,) = files.values()
    try:
        tree = ast.parse(data.decode("utf-8"))
    except (SyntaxError, UnicodeDecodeError) as exc:
        raise DataError(f"pyjokes jokes_en.py cannot be parsed: {exc}") from None
    texts: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.List):
            for item in node.value.elts:
                if isinstance(item, ast.Constant) and isinstance(item.value, str) and _keep(t := _clean(item.value)):
                    texts.append(t)
    if not texts:
        raise DataError("pyjokes jokes_en.py has no list of jokes")
    return texts


@dataclass(frozen=True)
class PairSource:
    name: str
    description: str
    package: PackageSpec
    member: str
    parser: Callable[[Mapping[str, bytes]], list[str]]
    licence: str

    def record(self, count: int) -> dict[str, Any]:
        """What a pair report and an adapter card list for this source."""
        return {
            "source": self.name,
            "label": f"{self.name} ({self.package.requirement})",  # what each pair's "source" says
            "package": self.package.name,
            "version": self.package.version,
            "registry": "npm" if isinstance(self.package, NpmSpec) else "pypi",
            "sha256": self.package.sha256,
            "member": self.member,
            "licence": self.licence,
            "texts": count,
        }


PAIR_SOURCES: dict[str, PairSource] = {
    s.name: s
    for s in (
        PairSource(
            "quotes",
            "inspirational quotes (one or two sentences each)",
            INSPIRATIONAL_QUOTES,
            "package/data/data.json",
            parse_inspirational_quotes,
            "MIT",
        ),
        PairSource(
            "one-liners",
            "one-line jokes about life, work, family, animals (offensive tags left out)",
            ONE_LINER_JOKE,
            "package/jokes.json",
            parse_one_liner_jokes,
            "MIT",
        ),
        PairSource(
            "pyjokes",
            "programmer and Chuck Norris one-liners (English)",
            PYJOKES,
            "pyjokes/jokes_en.py",
            parse_pyjokes,
            "BSD-3-Clause (code); jokes CC BY-SA 3.0",
        ),
    )
}


def source_store() -> TransferStore:
    """The package store of the pair sources (wheels and npm tarballs in the shared cache)."""
    return TransferStore(wheels=WheelStore(pins=dict(SOURCE_WHEELS)), npm=NpmStore())


def load_pair_source(name: str, store: TransferStore | None = None) -> tuple[list[str], dict[str, Any]]:
    """The sentences of one source (first copy of each normalised text, in package order) and its record."""
    if name not in PAIR_SOURCES:
        raise DataError(f"unknown pair source {name!r}; choose one of: {', '.join(PAIR_SOURCES)}")
    source = PAIR_SOURCES[name]
    store = store if store is not None else source_store()
    parsed = source.parser({source.member: store.read(source.package, source.member)})
    # One copy per normalised text: the quotes repeat some with other punctuation or case.
    first: dict[str, str] = {}
    for text in parsed:
        first.setdefault(normalise_text(text), text)
    texts = list(first.values())
    if not texts:
        raise DataError(f"pair source {name}: no sentences in {source.package.requirement}")
    return texts, source.record(len(texts))
