"""Leave-one-corpus-out guard: do training pairs contain texts of an evaluation task?

A pair text overlaps a task when, normalised (lower case, letters and digits only), it equals one of
the task's texts (test or train split), or shares a run of ``span`` words with one (which catches
crops and sentences cut out of a task's documents). Task texts are read from prepared data only
(nothing is fetched); each task's hashes are built once per process. ``strict=True`` refuses
overlapping pairs with a PairFileError naming the counts and the fix: the shipped recipe uses it.

CLI: ``python -m core.pairs.guard pairs.jsonl [--strict] [--tasks all|local|transfer|a,b]``.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from core.data.transfer import PREPARE_COMMAND as PREPARE_TRANSFER
from core.runtime.errors import DataUnavailableError, PairFileError, run_cli

log = logging.getLogger(__name__)

SPAN_WORDS = 12  # a shared run of this many words is not chance in English prose
PAIR_TEXT_FIELDS = ("anchor", "positive", "negative")


def normalise_text(text: str) -> str:
    """Lower case, runs of anything but letters and digits as one space: the form texts are compared in."""
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def _hash(text: str) -> int:
    # blake2b is stable across processes (unlike hash()); 8 bytes keep collisions negligible.
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little", signed=True)


_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # odd: the polynomial hash of a word run wraps mod 2**64


def span_hashes(texts: Sequence[str], span: int = SPAN_WORDS) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of every run of ``span`` words inside each normalised text, and the index of its text.

    Words are hashed once each, then every window is a polynomial of its word hashes, computed for all
    texts at once with numpy (a few seconds for 20 Newsgroups' 5M words, where hashing each joined
    window in Python took minutes).
    """
    vocabulary: dict[str, int] = {}
    ids: list[int] = []
    owner: list[int] = []
    for index, text in enumerate(texts):
        words = normalise_text(text).split()
        ids.extend(vocabulary.setdefault(w, len(vocabulary)) for w in words)
        owner.extend([index] * len(words))
    if len(ids) < span:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64)
    word_hashes = np.asarray([_hash(w) for w in vocabulary], dtype=np.int64).view(np.uint64)
    tokens = word_hashes[np.asarray(ids, dtype=np.int64)]
    text_of = np.asarray(owner, dtype=np.int64)
    starts = len(tokens) - span + 1
    combined = np.zeros(starts, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for offset in range(span):
            combined = combined * _MULTIPLIER + tokens[offset : offset + starts]
    inside = text_of[:starts] == text_of[span - 1 :]  # windows that do not run into the next text
    return combined[inside], text_of[:starts][inside]


@dataclass(frozen=True)
class TaskFingerprint:
    """Hashes of one task's normalised texts and of their ``span``-word runs (sorted and unique)."""

    name: str
    texts: frozenset[int]
    spans: np.ndarray
    n_texts: int

    def shares_span(self, hashes: np.ndarray) -> np.ndarray:
        """Whether each hash is one of this task's runs (binary search in the sorted array)."""
        if not self.spans.size or not hashes.size:
            return np.zeros(hashes.shape, dtype=bool)
        found = np.minimum(np.searchsorted(self.spans, hashes), self.spans.size - 1)
        return self.spans[found] == hashes


def fingerprint_texts(name: str, texts: Sequence[str], span: int = SPAN_WORDS) -> TaskFingerprint:
    whole = frozenset(_hash(normalise_text(t)) for t in texts)
    hashes, _ = span_hashes(texts, span)
    return TaskFingerprint(name, whole, np.unique(hashes), len(texts))


def evaluation_tasks(which: str = "all") -> list[str]:
    """Task names for ``all``, ``local``, ``transfer`` or a comma-separated list."""
    from core.data import LOCAL_TASKS, TRANSFER_TASKS

    groups = {"local": list(LOCAL_TASKS), "transfer": list(TRANSFER_TASKS)}
    groups["all"] = groups["local"] + groups["transfer"]
    if which in groups:
        return groups[which]
    names = [n.strip() for n in which.split(",") if n.strip()]
    unknown = [n for n in names if n not in groups["all"]]
    if unknown:
        raise PairFileError(f"unknown evaluation task(s) {', '.join(unknown)}; valid: {', '.join(groups['all'])}")
    return names


@cache
def _task_fingerprint(name: str, data_dir: Path | None, span: int) -> TaskFingerprint:
    from core.data import TRANSFER_TASKS, load_task

    splits = ("test",) if name in TRANSFER_TASKS else ("test", "train")
    texts: list[str] = []
    for split in splits:
        texts.extend(load_task(name, split, data_dir, prepare_if_missing=False).texts)  # type: ignore[arg-type]
    return fingerprint_texts(name, texts, span)


@dataclass
class TrackOverlapReport:
    """Pairs that share text with evaluation tasks, counted per task."""

    n_pairs: int
    tasks_checked: list[str]
    tasks_missing: dict[str, str] = field(default_factory=dict)  # task -> the command that prepares it
    exact: dict[str, int] = field(default_factory=dict)  # task -> pairs with a text equal to one of the task's
    span: dict[str, int] = field(default_factory=dict)  # task -> pairs sharing a run of span words (not equal)
    overlapping: list[int] = field(default_factory=list)  # indices of pairs overlapping any task
    span_words: int = SPAN_WORDS

    @property
    def clean(self) -> bool:
        return not self.overlapping

    def summary(self) -> str:
        if self.clean:
            text = f"no pair of {self.n_pairs} overlaps {len(self.tasks_checked)} evaluation task(s)"
        else:
            per_task = ", ".join(
                f"{t} {self.exact.get(t, 0)} equal + {self.span.get(t, 0)} sharing {self.span_words} words"
                for t in self.tasks_checked
                if self.exact.get(t) or self.span.get(t)
            )
            text = f"{len(self.overlapping)} of {self.n_pairs} pairs overlap evaluation tasks: {per_task}"
        if self.tasks_missing:
            text += f"; not checked (not prepared): {', '.join(self.tasks_missing)}"
        return text

    def refusal(self) -> PairFileError | None:
        """The shipped recipe's refusal of these pairs (overlap, or a task left unchecked), None when clean."""
        if not (self.overlapping or self.tasks_missing):
            return None
        fix = (
            "build the pairs from sources outside both tracks (python -m core.pairs --source quotes|one-liners|pyjokes "
            "or bible), or drop the overlapping pairs (python -m core.pairs.guard FILE --drop-overlap --out CLEAN)"
        )
        if self.tasks_missing:
            fix = f"prepare the missing tasks (python -m core.data prepare; {PREPARE_TRANSFER}) and check again"
        return PairFileError(f"refused for the shipped recipe (leave-one-corpus-out): {self.summary()}. Fix: {fix}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_pairs": self.n_pairs,
            "tasks_checked": self.tasks_checked,
            "tasks_missing": self.tasks_missing,
            "exact": self.exact,
            "span": self.span,
            "span_words": self.span_words,
            "overlapping_pairs": len(self.overlapping),
        }


def check_pairs_against_tracks(
    pairs: Sequence[dict[str, Any]],
    *,
    strict: bool = False,
    tasks: str | Sequence[str] = "all",
    data_dir: Path | None = None,
    span: int = SPAN_WORDS,
) -> TrackOverlapReport:
    """Which pairs share text with the evaluation tasks (local + transfer, test and train splits).

    Warns with the counts per task; ``strict=True`` raises PairFileError instead (and also when a task
    is not prepared, since unchecked is not clean).
    """
    names = evaluation_tasks(tasks) if isinstance(tasks, str) else evaluation_tasks(",".join(tasks))
    report = TrackOverlapReport(n_pairs=len(pairs), tasks_checked=[], span_words=span)
    fingerprints = []
    for name in names:
        try:
            fingerprints.append(_task_fingerprint(name, Path(data_dir) if data_dir else None, span))
            report.tasks_checked.append(name)
        except DataUnavailableError as exc:
            report.tasks_missing[name] = str(exc)
    pair_whole: list[set[int]] = []
    pair_texts: list[str] = []
    pair_of_text: list[int] = []
    for index, pair in enumerate(pairs):
        texts = [pair[k] for k in PAIR_TEXT_FIELDS if isinstance(pair.get(k), str)]
        pair_whole.append({_hash(normalise_text(t)) for t in texts})
        pair_texts.extend(texts)
        pair_of_text.extend([index] * len(texts))
    hashes, text_index = span_hashes(pair_texts, span)
    pair_index = np.asarray(pair_of_text, dtype=np.int64)[text_index] if hashes.size else text_index
    overlapping: set[int] = set()
    for fp in fingerprints:
        exact = {i for i, whole in enumerate(pair_whole) if whole & fp.texts}
        shared = {int(i) for i in np.unique(pair_index[fp.shares_span(hashes)])} - exact
        if exact:
            report.exact[fp.name] = len(exact)
        if shared:
            report.span[fp.name] = len(shared)
        overlapping |= exact | shared
    report.overlapping = sorted(overlapping)
    refusal = report.refusal() if strict else None
    if refusal is not None:
        raise refusal
    if not report.clean or report.tasks_missing:
        log.warning("%s", report.summary())
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m core.pairs.guard``: report (or refuse) pairs that overlap evaluation tasks."""
    from core.pairs.files import read_pairs, write_pairs
    from core.runtime.files import write_json

    parser = argparse.ArgumentParser(prog="python -m core.pairs.guard", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("pairs", type=Path, help="pair file (JSONL or TSV)")
    parser.add_argument("--tasks", default="all", help="all, local, transfer, or comma-separated task names")
    parser.add_argument("--strict", action="store_true", help="exit 2 if any pair overlaps (the shipped recipe)")
    parser.add_argument("--span", type=int, default=SPAN_WORDS, help="words in a shared run that counts as overlap")
    parser.add_argument("--drop-overlap", action="store_true", help="write the pairs that do not overlap to --out")
    parser.add_argument("--out", type=Path, help="where --drop-overlap writes the clean pairs")
    parser.add_argument("--report", type=Path, help="write the overlap report as JSON")
    args = parser.parse_args(argv)
    if args.drop_overlap and args.out is None:
        raise PairFileError("--drop-overlap needs --out FILE for the clean pairs")
    pairs = read_pairs(args.pairs)
    report = check_pairs_against_tracks(pairs, strict=args.strict, tasks=args.tasks, span=args.span)
    print(f"{args.pairs}: {report.summary()}")
    if args.report:
        write_json(args.report, report.to_dict())
    if args.drop_overlap:
        dropped = set(report.overlapping)
        kept = [p for i, p in enumerate(pairs) if i not in dropped]
        if not kept:
            raise PairFileError(f"every pair of {args.pairs} overlaps an evaluation task; nothing written")
        write_pairs(args.out, kept)
        print(f"{args.out}: {len(kept)} pairs kept, {len(dropped)} dropped")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
