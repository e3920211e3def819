"""The user's own files: CSV, TSV, JSONL, JSON or parquet with a text column (and a label column), and uploads.

``load_user_file`` reads a file whole; ``iter_texts`` streams the texts of one (or of a ``.txt``, one per line)
through the same readers, a batch of rows at a time, for corpora beyond memory (``core.embed``).
Every problem is a ``UserFileError`` (a ``ValueError`` too) whose message names the file and the fix.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from core.data.dataset import Dataset, content_sha256
from core.runtime.errors import UserFileError
from core.runtime.files import atomic_write
from core.runtime.paths import cache_root

USER_FORMATS = (".csv", ".tsv", ".jsonl", ".json", ".parquet")
# What ``iter_texts`` reads (core.embed's inputs): a user file, or plain text with one text per line.
TEXT_FORMATS = (".txt", *USER_FORMATS)
BATCH_ROWS = 4096  # rows parsed at a time by the streaming readers
MAX_UPLOAD_BYTES = 20 * 1024 * 1024


def _not_utf8(path: Path) -> UserFileError:
    """The error for a file that is not UTF-8, naming the first bad byte and its offset (found by a scan of the
    file, so readers that stream it report the same place as a whole-file decode)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            pending = decoder.getstate()[0]
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                data = pending + block
                bad = data[exc.start : exc.start + 1].hex()
                return UserFileError(
                    f"{path} is not UTF-8 (byte 0x{bad} at offset {offset - len(pending) + exc.start}); "
                    "re-save it as UTF-8"
                )
            offset += len(block)
    pending = decoder.getstate()[0]
    return UserFileError(
        f"{path} is not UTF-8 (byte 0x{pending[:1].hex()} at offset {offset - len(pending)}); re-save it as UTF-8"
    )


@contextmanager
def _open_utf8(path: Path, newline: str = "") -> Iterator[TextIO]:
    """``path`` open as UTF-8 text (a BOM dropped); unreadable or non-UTF-8 content is a UserFileError.

    ``newline`` as for :func:`open`: ``""`` (the default, what the CSV reader needs) keeps every line ending.
    """
    try:
        handle = path.open(encoding="utf-8-sig", newline=newline)
    except OSError as exc:  # unreadable (permissions, a vanished upload): the user can fix it, so no traceback
        raise UserFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        with handle:
            yield handle
    except UnicodeDecodeError:
        raise _not_utf8(path) from None


def _iter_records(path: Path, columns: list[str]) -> Iterator[dict[str, Any]]:
    """The rows of a user file, read lazily (CSV, TSV, JSONL and parquet a batch at a time; JSON whole).

    ``columns`` is filled with the column names: all of them before the first row, except for JSONL, whose
    keys are added as rows bring them. Any problem is a UserFileError with a plain message.
    """
    ext = path.suffix.lower()
    if ext == ".parquet":
        yield from _iter_parquet(path, columns)
        return
    with _open_utf8(path) as handle:
        if ext in (".csv", ".tsv"):
            yield from _iter_csv(path, handle, "\t" if ext == ".tsv" else ",", columns)
        elif ext == ".jsonl":
            yield from _iter_jsonl(path, handle, columns)
        else:
            yield from _iter_json(path, handle.read(), columns)


def _empty(path: Path) -> UserFileError:
    return UserFileError(f"{path} is empty")


def _iter_parquet(path: Path, columns: list[str]) -> Iterator[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(path)
        columns.extend(str(c) for c in parquet.schema_arrow.empty_table().to_pandas().columns)
        batches = parquet.iter_batches(batch_size=BATCH_ROWS)
        for batch in batches:
            frame = batch.to_pandas()
            yield from frame.astype(object).where(frame.notna(), None).to_dict("records")
    except (OSError, ValueError, ImportError) as exc:  # pyarrow's errors subclass the first two
        raise UserFileError(f"cannot read {path} as parquet: {str(exc).splitlines()[0]}") from None


def _iter_csv(path: Path, handle: TextIO, sep: str, columns: list[str]) -> Iterator[dict[str, Any]]:
    import pandas as pd

    try:
        reader = pd.read_csv(handle, sep=sep, dtype=str, keep_default_na=False, na_filter=False, chunksize=BATCH_ROWS)
        for frame in reader:
            if not columns:
                columns.extend(str(c) for c in frame.columns)
            yield from frame.to_dict("records")
    except UnicodeDecodeError:
        raise  # a ValueError too, but _open_utf8 names the bad byte
    except pd.errors.EmptyDataError:  # pandas skips blank lines: nothing but whitespace
        raise _empty(path) from None
    except (pd.errors.ParserError, ValueError) as exc:
        raise UserFileError(f"cannot parse {path}: {str(exc).splitlines()[0]}") from None


def _iter_jsonl(path: Path, handle: TextIO, columns: list[str]) -> Iterator[dict[str, Any]]:
    known: set[str] = set()
    blank = True
    for lineno, line in enumerate(handle, 1):
        if not line.strip():
            continue
        blank = False
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise UserFileError(f"{path}, line {lineno}: not valid JSON ({exc})") from None
        if not isinstance(row, dict):
            raise UserFileError(f"{path}, line {lineno}: expected a JSON object per line")
        for key in row:
            if key not in known:
                known.add(key)
                columns.append(key)
        yield row
    if blank:
        raise _empty(path)


def _iter_json(path: Path, text: str, columns: list[str]) -> Iterator[dict[str, Any]]:
    if not text.strip():
        raise _empty(path)
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise UserFileError(f"{path}: not valid JSON ({exc})") from None
    if isinstance(obj, dict) and obj and all(isinstance(v, list) for v in obj.values()):
        lengths = {len(v) for v in obj.values()}
        if len(lengths) != 1:
            raise UserFileError(f"{path}: the column lists have different lengths")
        columns.extend(obj)
        for values in zip(*obj.values(), strict=True):
            yield dict(zip(obj, values, strict=True))
        return
    if not isinstance(obj, list) or not all(isinstance(r, dict) for r in obj):
        raise UserFileError(f"{path}: expected a list of objects or an object of column lists")
    columns.extend(dict.fromkeys(k for row in obj for k in row))
    yield from obj


def _read_records(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """Column names and rows of a user file, read whole; UserFileError with a plain message on any problem."""
    columns: list[str] = []
    rows = list(_iter_records(path, columns))
    return columns, rows


def _cell(value: Any, path: Path, row: int, column: str) -> str:
    """A cell as text: a string stripped, a number or boolean written out, nothing as ""; a list, object or other
    value with parts is a UserFileError naming the row and column (its Python repr would be embedded instead)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (bool, int, float)) or (hasattr(value, "item") and getattr(value, "ndim", 1) == 0):
        return str(value).strip()
    kind = type(value).__name__
    raise UserFileError(
        f"{path}, row {row}, column {column!r}: the cell is a {kind}, not text ({str(value)[:60]!r}); "
        "each cell of that column must be one string. Flatten or join the values into text first."
    )


def _check_file(path: Path, formats: tuple[str, ...]) -> None:
    """Exists, is a file, has one of ``formats``' suffixes."""
    if not path.exists():
        raise UserFileError(f"no such file: {path}")
    if not path.is_file():
        raise UserFileError(f"not a file: {path}")
    if path.suffix.lower() not in formats:
        raise UserFileError(
            f"unsupported file type {path.suffix or '(none)'!r} for {path}; use one of {', '.join(formats)}"
        )


def _missing_column(path: Path, option: str, column: str, columns: list[str]) -> UserFileError:
    flag = "--" + option.replace("_", "-")
    hint = " (or label_column=None for unlabelled text)" if option == "label_column" else ""
    return UserFileError(
        f"{path} has no column {column!r}; its columns are: {', '.join(columns)}. "
        f"Name the right one: {flag} NAME on the command line (PATH:TEXTCOL:LABELCOL for a grid dataset), "
        f"or {option}=NAME{hint} in Python"
    )


def _no_text(path: Path, text_column: str) -> UserFileError:
    return UserFileError(f"{path} has no rows with non-empty text in column {text_column!r}")


def iter_texts(path: str | Path, text_column: str = "text") -> Iterator[str]:
    """The non-empty texts of a ``.txt`` file (one per line) or a user file (``text_column``), in file order,
    read lazily: memory holds one batch of rows, not the file. Problems are the UserFileErrors of
    :func:`load_user_file` (the same readers and messages); rows with empty text are dropped with a warning."""
    path = Path(path)
    _check_file(path, TEXT_FORMATS)
    if path.suffix.lower() == ".txt":
        yield from _iter_lines(path)
        return
    if path.stat().st_size == 0:
        raise _empty(path)
    columns: list[str] = []
    rows = no_text = 0
    for row in _iter_records(path, columns):
        if not rows and path.suffix.lower() != ".jsonl" and text_column not in columns:
            raise _missing_column(path, "text_column", text_column, columns)  # known up front: fail at once
        rows += 1
        if text := _cell(row.get(text_column), path, rows, text_column):
            yield text
        else:
            no_text += 1
    if not rows:
        raise UserFileError(f"{path} has no rows")
    if text_column not in columns:
        raise _missing_column(path, "text_column", text_column, columns)
    if no_text:
        warnings.warn(f"{path}: dropped {no_text} row(s) with empty text", stacklevel=2)
    if no_text == rows:
        raise _no_text(path, text_column)


def _iter_lines(path: Path) -> Iterator[str]:
    """A .txt file's non-blank lines, each one text. A line ends at ``\n`` (or ``\r\n``) only: form feeds, vertical
    tabs, NEL, U+2028/U+2029 and the other separators ``str.splitlines`` knows stay inside a text, so the n-th
    text is the n-th non-blank line a user counts (and labels) in an editor."""
    found = False
    with _open_utf8(path, newline="\n") as handle:
        for raw in handle:
            line = raw.removesuffix("\n").removesuffix("\r")
            if line.strip():
                found = True
                yield line
    if not found:
        raise UserFileError(f"{path} has no non-empty lines; give it one text per line.")


def load_user_file(path: str | Path, text_column: str = "text", label_column: str | None = "label") -> Dataset:
    """Texts (and labels) from a .csv, .tsv, .jsonl, .json or .parquet file; rows with empty text are dropped."""
    path = Path(path)
    _check_file(path, USER_FORMATS)
    if path.stat().st_size == 0:
        raise _empty(path)
    columns, rows = _read_records(path)
    if not rows:
        raise UserFileError(f"{path} has no rows")
    for option, column in (("text_column", text_column), ("label_column", label_column)):
        if column is not None and column not in columns:
            raise _missing_column(path, option, column, columns)
    texts: list[str] = []
    labels: list[str] | None = [] if label_column is not None else None
    no_text = no_label = 0
    for number, row in enumerate(rows, 1):
        text = _cell(row.get(text_column), path, number, text_column)
        if not text:
            no_text += 1
            continue
        if labels is not None:
            label = _cell(row.get(label_column), path, number, str(label_column))
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
        raise _no_text(path, text_column)
    return Dataset(name=path.stem, texts=texts, labels=labels, sha256=content_sha256(texts, labels), source=str(path))


def file_columns(path: str | Path) -> list[str]:
    """Column names of a user file (for pickers); UserFileError with a plain message on any problem."""
    path = Path(path)
    if path.suffix.lower() not in USER_FORMATS:
        raise UserFileError(f"unsupported file type {path.suffix or '(none)'!r}; use one of {', '.join(USER_FORMATS)}")
    if path.stat().st_size == 0:
        raise UserFileError(f"{path.name} is empty")
    columns, rows = _read_records(path)
    if not rows:
        raise UserFileError(f"{path.name} has no rows")
    return columns


def save_upload(name: str, data: bytes, folder: str | Path | None = None) -> Path:
    """Store uploaded bytes under the cache (content-addressed, suffix kept) so the file readers apply (a ``.txt``
    is read by :func:`iter_texts`, one text per line)."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise UserFileError(f"{name} is {len(data) / 2**20:.1f} MB; the limit is {MAX_UPLOAD_BYTES // 2**20} MB")
    suffix = Path(name).suffix.lower()
    if suffix not in TEXT_FORMATS:
        formats = ", ".join(TEXT_FORMATS)
        raise UserFileError(f"unsupported file type {suffix or '(none)'!r} for {name}; use one of {formats}")
    target = Path(folder) if folder is not None else cache_root() / "uploads"
    target.mkdir(parents=True, exist_ok=True)
    path = target / f"{hashlib.sha256(data).hexdigest()[:16]}{suffix}"
    if not path.is_file():
        with atomic_write(path, "wb") as handle:
            handle.write(data)
    return path
