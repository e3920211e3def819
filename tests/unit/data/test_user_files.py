"""core.data.user_files: the user's CSV/TSV/JSONL/JSON/parquet files and uploads; clear messages, no tracebacks."""

from __future__ import annotations

import contextlib
import json

import pytest

from core.data import MAX_UPLOAD_BYTES, content_sha256, file_columns, load_user_file, save_upload
from core.runtime.errors import LensError, UserFileError


def test_user_csv_drops_empty_texts_with_warning(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('text,label\n"a, quoted",x\n,y\n  ,y\nb,z\nNA,x\n', encoding="utf-8")
    with pytest.warns(UserWarning, match="dropped 2 row"):
        ds = load_user_file(path)
    assert ds.texts == ["a, quoted", "b", "NA"] and ds.labels == ["x", "z", "x"]
    assert ds.sha256 == content_sha256(ds.texts, ds.labels) and ds.name == "d"


@pytest.mark.parametrize("ext", [".tsv", ".jsonl", ".json", ".parquet"])
def test_user_formats(tmp_path, ext):
    rows = [{"body": "first", "topic": 1}, {"body": "second", "topic": 2}]
    path = tmp_path / f"d{ext}"
    if ext == ".tsv":
        path.write_text("body\ttopic\nfirst\t1\nsecond\t2\n")
    elif ext == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    elif ext == ".json":
        path.write_text(json.dumps({"body": ["first", "second"], "topic": [1, 2]}))
    else:
        import pandas as pd

        pd.DataFrame(rows).to_parquet(path)
    ds = load_user_file(path, text_column="body", label_column="topic")
    assert ds.texts == ["first", "second"] and ds.labels == ["1", "2"]
    assert load_user_file(path, text_column="body", label_column=None).labels is None


def test_user_json_list_of_objects(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"text": "a", "label": "x"}, {"text": "b", "label": "y"}]))
    assert load_user_file(path).n_labels() == 2


def test_user_missing_column_names_columns_and_option(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("sentence,topic\nhello,a\n")
    with pytest.raises(ValueError, match=r"no column 'text'; its columns are: sentence, topic\. .*--text-column NAME"):
        load_user_file(path)
    with pytest.raises(ValueError, match=r"label_column=None"):
        load_user_file(path, text_column="sentence")


@pytest.mark.parametrize(
    ("name", "body", "message"),
    [
        ("empty.csv", b"", "is empty"),
        ("blank.jsonl", b"\n\n", "is empty"),
        ("header.csv", b"text,label\n", "has no rows"),
        ("bad.csv", b"text,label\ncaf\xe9,x\n", r"not UTF-8 \(byte 0xe9 at offset 14\)"),
        ("bad.jsonl", b'{"text": "a"}\nnot json\n', "line 2: not valid JSON"),
        ("d.txt", b"text\nhello\n", "unsupported file type '.txt'"),
        ("none.csv", b"text,label\n ,x\n,y\n", "no rows with non-empty text"),
        ("bad.parquet", b"not parquet", "cannot read"),
    ],
)
def test_user_file_errors(tmp_path, name, body, message):
    path = tmp_path / name
    path.write_bytes(body)
    expect_warning = pytest.warns(UserWarning) if name == "none.csv" else contextlib.nullcontext()
    with expect_warning, pytest.raises(ValueError, match=message) as error:
        load_user_file(path)
    # A ValueError for callers that caught that before, and a LensError for run_cli and the pages.
    assert isinstance(error.value, UserFileError) and isinstance(error.value, LensError)


def test_user_missing_file(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        load_user_file(tmp_path / "nope.csv")


def test_unreadable_file_is_a_user_file_error(tmp_path, monkeypatch):
    path = tmp_path / "locked.csv"
    path.write_text("text\nhello\n")

    def denied(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(type(path), "open", denied)
    with pytest.raises(UserFileError, match=r"cannot read .*locked\.csv: Permission denied"):
        load_user_file(path)


# --- uploads (cluster explorer): size limit, types, columns, encodings -----------------------


def test_upload_is_stored_by_content_and_read_like_a_user_file(tmp_path):
    data = b"text,label\nthe cat sleeps,animals\nthe market fell,finance\n"
    path = save_upload("mine.csv", data, tmp_path)
    assert path.suffix == ".csv" and save_upload("other-name.csv", data, tmp_path) == path
    assert file_columns(path) == ["text", "label"]
    dataset = load_user_file(path, "text", "label")
    assert dataset.texts == ["the cat sleeps", "the market fell"] and dataset.labels == ["animals", "finance"]


@pytest.mark.parametrize(
    ("name", "data", "match"),
    [
        ("big.csv", b"x" * (MAX_UPLOAD_BYTES + 1), "the limit is 20 MB"),
        ("notes.docx", b"text\nhello\n", "unsupported file type '.docx'"),
    ],
)
def test_bad_uploads_are_refused_before_storing(tmp_path, name, data, match):
    with pytest.raises(ValueError, match=match):
        save_upload(name, data, tmp_path)
    assert not list(tmp_path.iterdir())


def test_empty_latin1_and_columnless_files_say_what_is_wrong(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        file_columns(save_upload("empty.csv", b"", tmp_path))
    with pytest.raises(ValueError, match="UTF-8"):
        file_columns(save_upload("latin.csv", "text\ncaf\xe9 cr\xe8me\n".encode("latin-1"), tmp_path))
    path = save_upload("cols.csv", b"body,topic\nhello,a\n", tmp_path)
    with pytest.raises(ValueError, match="no column 'text'; its columns are: body, topic"):
        load_user_file(path, "text", "topic")


# --- streaming: the same readers and messages, a batch of rows at a time -------------------------


@pytest.mark.parametrize("ext", [".txt", ".csv", ".tsv", ".jsonl", ".json", ".parquet"])
def test_iter_texts_equals_load_user_file(tmp_path, monkeypatch, ext):
    import core.data.user_files as user_files

    monkeypatch.setattr(user_files, "BATCH_ROWS", 3)  # several batches from a small file
    texts = [f"text number {i}" for i in range(10)]
    path = tmp_path / f"d{ext}"
    rows = [{"text": t, "n": i} for i, t in enumerate(texts)]
    if ext == ".txt":
        path.write_text("\n\n".join(texts) + "\n")
    elif ext in (".csv", ".tsv"):
        sep = "," if ext == ".csv" else "\t"
        path.write_text("text" + sep + "n\n" + "".join(f"{t}{sep}{i}\n" for i, t in enumerate(texts)))
    elif ext == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif ext == ".json":
        path.write_text(json.dumps(rows))
    else:
        import pandas as pd

        pd.DataFrame(rows).to_parquet(path)
    assert list(user_files.iter_texts(path)) == texts
    if ext != ".txt":
        assert load_user_file(path, label_column=None).texts == texts


@pytest.mark.parametrize(
    ("name", "body", "message"),
    [
        ("empty.csv", b"", "is empty"),
        ("blank.jsonl", b"\n\n", "is empty"),
        ("blank.csv", b"\n \n", "is empty"),
        ("header.csv", b"text,label\n", "has no rows"),
        ("bad.csv", b"text,label\ncaf\xe9,x\n", r"not UTF-8 \(byte 0xe9 at offset 14\)"),
        ("bad.txt", b"one\ncaf\xe9\n", r"not UTF-8 \(byte 0xe9 at offset 7\)"),
        ("bad.jsonl", b'{"text": "a"}\nnot json\n', "line 2: not valid JSON"),
        ("cols.csv", b"body,topic\nhello,a\n", r"no column 'text'; its columns are: body, topic\..*--text-column NAME"),
        ("cols.jsonl", b'{"body": "x"}\n', r"no column 'text'; its columns are: body\..*--text-column NAME"),
        ("d.docx", b"text\nhello\n", "unsupported file type '.docx'"),
        ("blank.txt", b"\n  \n", "has no non-empty lines"),
        ("bad.parquet", b"not parquet", "cannot read"),
    ],
)
def test_iter_texts_errors_are_load_user_files(tmp_path, name, body, message):
    from core.data.user_files import iter_texts

    path = tmp_path / name
    path.write_bytes(body)
    with pytest.raises(UserFileError, match=message):
        list(iter_texts(path))


def test_a_late_utf8_error_names_its_absolute_offset(tmp_path):
    """The streaming reader fails mid-file at the same byte a whole-file decode names."""
    from core.data.user_files import iter_texts

    path = tmp_path / "late.csv"
    head = b"text\n" + b"fine line\n" * 50_000
    path.write_bytes(head + b"caf\xe9\n")
    with pytest.raises(UserFileError, match=rf"byte 0xe9 at offset {len(head) + 3}\)"):
        list(iter_texts(path))
    with pytest.raises(UserFileError, match=rf"byte 0xe9 at offset {len(head) + 3}\)"):
        load_user_file(path, label_column=None)
