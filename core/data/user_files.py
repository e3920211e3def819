"""The user's own files: CSV, TSV, JSONL, JSON or parquet with a text column (and a label column), and uploads.

Every problem is a ``UserFileError`` (a ``ValueError`` too) whose message names the file and the fix.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from pathlib import Path
from typing import Any

from core.data.dataset import Dataset, content_sha256
from core.errors import UserFileError
from core.files import atomic_write
from core.paths import cache_root

USER_FORMATS = (".csv", ".tsv", ".jsonl", ".json", ".parquet")
MAX_UPLOAD_BYTES = 20 * 1024 * 1024


def _decode_utf8(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        bad = data[exc.start : exc.start + 1].hex()
        raise UserFileError(f"{path} is not UTF-8 (byte 0x{bad} at offset {exc.start}); re-save it as UTF-8") from None


def _read_records(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """Column names and rows of a user file; UserFileError with a plain message on any problem."""
    ext = path.suffix.lower()
    if ext == ".parquet":
        import pandas as pd

        try:
            frame = pd.read_parquet(path)
        except (OSError, ValueError, ImportError) as exc:  # pyarrow's errors subclass the first two
            raise UserFileError(f"cannot read {path} as parquet: {str(exc).splitlines()[0]}") from None
        frame = frame.astype(object).where(frame.notna(), None)
        return [str(c) for c in frame.columns], frame.to_dict("records")
    try:
        raw = path.read_bytes()
    except OSError as exc:  # unreadable (permissions, a vanished upload): the user can fix it, so no traceback
        raise UserFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    text = _decode_utf8(path, raw)
    if not text.strip():
        raise UserFileError(f"{path} is empty")
    if ext in (".csv", ".tsv"):
        import pandas as pd

        try:
            frame = pd.read_csv(
                io.StringIO(text), sep="\t" if ext == ".tsv" else ",", dtype=str, keep_default_na=False, na_filter=False
            )
        except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
            raise UserFileError(f"cannot parse {path}: {str(exc).splitlines()[0]}") from None
        return [str(c) for c in frame.columns], frame.to_dict("records")
    if ext == ".jsonl":
        rows = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise UserFileError(f"{path}, line {lineno}: not valid JSON ({exc})") from None
            if not isinstance(row, dict):
                raise UserFileError(f"{path}, line {lineno}: expected a JSON object per line")
            rows.append(row)
    else:
        try:
            obj = json.loads(text)
        except ValueError as exc:
            raise UserFileError(f"{path}: not valid JSON ({exc})") from None
        if isinstance(obj, dict) and obj and all(isinstance(v, list) for v in obj.values()):
            lengths = {len(v) for v in obj.values()}
            if len(lengths) != 1:
                raise UserFileError(f"{path}: the column lists have different lengths")
            rows = [dict(zip(obj, vals, strict=True)) for vals in zip(*obj.values(), strict=True)]
            return list(obj), rows
        if not isinstance(obj, list) or not all(isinstance(r, dict) for r in obj):
            raise UserFileError(f"{path}: expected a list of objects or an object of column lists")
        rows = obj
    columns = list(dict.fromkeys(k for row in rows for k in row))
    return columns, rows


def _cell(value: Any) -> str:
    return "" if value is None else value.strip() if isinstance(value, str) else str(value).strip()


def load_user_file(path: str | Path, text_column: str = "text", label_column: str | None = "label") -> Dataset:
    """Texts (and labels) from a .csv, .tsv, .jsonl, .json or .parquet file; rows with empty text are dropped."""
    path = Path(path)
    if not path.exists():
        raise UserFileError(f"no such file: {path}")
    if not path.is_file():
        raise UserFileError(f"not a file: {path}")
    if path.suffix.lower() not in USER_FORMATS:
        raise UserFileError(
            f"unsupported file type {path.suffix or '(none)'!r} for {path}; use one of {', '.join(USER_FORMATS)}"
        )
    if path.stat().st_size == 0:
        raise UserFileError(f"{path} is empty")
    columns, rows = _read_records(path)
    if not rows:
        raise UserFileError(f"{path} has no rows")
    for option, column in (("text_column", text_column), ("label_column", label_column)):
        if column is not None and column not in columns:
            flag = "--" + option.replace("_", "-")
            hint = " (or label_column=None for unlabelled text)" if option == "label_column" else ""
            raise UserFileError(
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
        raise UserFileError(f"{path} has no rows with non-empty text in column {text_column!r}")
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
    """Store uploaded bytes under the cache (content-addressed, suffix kept) so the file readers apply."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise UserFileError(f"{name} is {len(data) / 2**20:.1f} MB; the limit is {MAX_UPLOAD_BYTES // 2**20} MB")
    suffix = Path(name).suffix.lower()
    if suffix not in USER_FORMATS:
        formats = ", ".join(USER_FORMATS)
        raise UserFileError(f"unsupported file type {suffix or '(none)'!r} for {name}; use one of {formats}")
    target = Path(folder) if folder is not None else cache_root() / "uploads"
    target.mkdir(parents=True, exist_ok=True)
    path = target / f"{hashlib.sha256(data).hexdigest()[:16]}{suffix}"
    if not path.is_file():
        with atomic_write(path, "wb") as handle:
            handle.write(data)
    return path
