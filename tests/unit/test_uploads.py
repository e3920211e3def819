"""Uploaded files (cluster explorer): size limit, types, columns, encodings; clear messages, no tracebacks."""

from __future__ import annotations

import pytest

from core.data import MAX_UPLOAD_BYTES, file_columns, load_user_file, save_upload


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
