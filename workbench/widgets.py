"""Shared page parts: the header naming the model choice, truncation notes and download buttons."""

from __future__ import annotations

import io
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import streamlit as st

from core.runtime.browser import find_chromium
from core.runtime.errors import LensError
from workbench.state import ModelChoice


def header(title: str, choice: ModelChoice | None = None) -> None:
    """The page title, and the model choice it shows (the same on every page: the sidebar's), max length as a
    number of tokens (:func:`max_length_words`)."""
    st.title(title)
    if choice is not None:
        adapter = choice.adapter or "none (base model only)"
        length = max_length_words(choice)
        st.caption(f"Model **{choice.model}** · adapter **{adapter}** · max length {length} · device {choice.device}")


def max_length_words(choice: ModelChoice) -> str:
    """The max length the pages read texts at, as a number and where it comes from: the sidebar's, else the
    adapter's trained one (its settings file, read without loading a model), else the default.

    The number is the one :meth:`EmbeddingSetting.resolve` gives the encoder, so the header and the embeddings agree.
    """
    from core.encoding.setting import EmbeddingSetting
    from core.models.adapters import read_metadata

    if choice.max_length:
        return f"{choice.max_length} tokens (sidebar)"
    metadata: dict[str, Any] = {}
    if choice.adapter:
        try:
            metadata = read_metadata(choice.adapter)
        except (LensError, OSError, ValueError):
            metadata = {}  # the page's own adapter loading says what is wrong with the folder
    try:
        length = EmbeddingSetting.resolve(metadata or None).max_length
    except (LensError, TypeError, ValueError):
        metadata, length = {}, EmbeddingSetting().max_length
    source = "the adapter's" if metadata.get("max_length") else "default"
    return f"{length} tokens ({source})"


def truncation_note(encoder: Any, texts: Sequence[str]) -> int:
    """Warn in the page how many texts ``encoder`` (with the page's settings) cuts at its max length, counted by
    tokenizing (cache or not); under an ensemble, the most any of its prompts cuts.

    A max length that leaves no room for text stops the page with that error.
    """
    import dataclasses

    from core.encoding.methods import Ensemble

    method = encoder.method
    try:
        views = (
            [encoder.with_setting(dataclasses.replace(encoder.setting, method="plain", prompt=t.template))
             for t in method.templates()]
            if isinstance(method, Ensemble)
            else [encoder]
        )  # fmt: skip
        cut = max(sum(item.truncated for item in view.prepare(texts)) for view in views)
    except ValueError as error:
        st.error(str(error))
        st.stop()
    if cut:
        st.warning(
            f"{cut} of {len(texts)} texts are longer than {encoder.max_length} tokens (prompt included) and were "
            "cut. Raise *Max length* in the sidebar to keep more of each text."
        )
    return cut


def file_stem(*parts: Any) -> str:
    """A file name from the view's settings, e.g. ``embed_base_eol_last_L-1``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", "_".join(str(p) for p in parts if p not in (None, ""))).strip("-")[:120]


def figure_downloads(figure: Any, stem: str, key: str) -> None:
    """HTML (opens offline) always; PNG where Debian's chromium exists. Both are made on click, not per rerun."""
    left, right = st.columns(2)
    html = lambda: figure.to_html(include_plotlyjs=True)  # noqa: E731
    left.download_button("HTML", html, f"{stem}.html", "text/html", key=f"{key}_html", on_click="ignore")
    if find_chromium():
        from analysis.plots import png_bytes

        png = lambda: png_bytes(figure, scale=2)  # noqa: E731
        right.download_button("PNG", png, f"{stem}.png", "image/png", key=f"{key}_png", on_click="ignore")


def table_download(table: Any, stem: str, key: str, label: str = "CSV") -> None:
    """A DataFrame (or a dict of columns) as CSV, made on click (tens of thousands of rows cost nothing per rerun)."""
    import pandas as pd

    def csv() -> str:
        return (table if isinstance(table, pd.DataFrame) else pd.DataFrame(table)).to_csv(index=False)

    st.download_button(label, csv, f"{stem}.csv", "text/csv", key=key, on_click="ignore")


def array_download(array: np.ndarray, stem: str, key: str, label: str = "NPY") -> None:
    """An array as .npy, made on click."""

    def npy() -> bytes:
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(array))
        return buffer.getvalue()

    st.download_button(label, npy, f"{stem}.npy", "application/octet-stream", key=key, on_click="ignore")


def downloads_row(items: Sequence[tuple[str, Any]]) -> None:
    """Several downloads side by side: (kind, args) with kind in figure/table/array."""
    for column, (kind, args) in zip(st.columns(len(items)), items, strict=True):
        with column:
            {"figure": figure_downloads, "table": table_download, "array": array_download}[kind](*args)


def _text_lines(path: Any, name: str):
    """A .txt upload's non-blank lines as an unlabelled dataset named after the user's file."""
    from pathlib import Path

    from core.data import Dataset, content_sha256
    from core.data.user_files import iter_texts

    texts = list(iter_texts(path))
    st.caption(f"{name}: {len(texts)} texts, one per line, no labels.")
    return Dataset(name=Path(name).stem, texts=texts, labels=None, sha256=content_sha256(texts, None), source=name)


def pick_dataset(key: str, default_task: str = "trec-coarse", max_texts: int = 2000):
    """A local task or an uploaded file, then a seeded sample (at most ``max_texts``) whose size never exceeds the
    texts there are.

    Returns the sampled :class:`core.data.Dataset` (labels None when no label column; an upload named after the
    user's file), or stops the page with an error or a hint.
    """
    import dataclasses
    from pathlib import Path

    from core.data import LOCAL_TASKS, DataError, file_columns, load_task, load_user_file, sample_dataset, save_upload
    from workbench.state import forget_in_url, kept

    source = st.radio("Data", ["local task", "upload a file"], horizontal=True, **kept(f"{key}_source", "local task"))
    upload, stored = None, None
    try:
        if source == "local task":
            tasks = list(LOCAL_TASKS)
            task = st.selectbox(
                "Task (test split)", tasks, **kept(f"{key}_task", default_task, options=tasks, url="task")
            )
            full = load_task(task, "test")
        else:
            forget_in_url("task")  # the URL names the data shown: no longer a local task
            # Any suffix gets through the uploader, so a wrong one gets save_upload's message, not only a red icon.
            upload = st.file_uploader("CSV, TSV, JSONL, JSON, parquet, or TXT with one text per line (max 20 MB)")
            if upload is None:
                st.info("Upload a file with a text column and, optionally, a label column (or a .txt: one text per "
                        "line, no labels).")  # fmt: skip
                st.stop()
            stored = save_upload(upload.name, upload.getvalue())
            columns = file_columns(stored) if stored.suffix != ".txt" else []
            if not columns:  # a .txt: one text per line
                full = _text_lines(stored, upload.name)
            else:
                left, right = st.columns(2)
                text_column = left.selectbox(
                    "Text column", columns, index=columns.index("text") if "text" in columns else 0
                )
                if "text" not in columns:
                    st.info(
                        f"{upload.name} has no column named `text`: showing `{text_column}`. Pick the text column "
                        "above."
                    )
                label_options = ["(none)", *columns]
                label_column = right.selectbox(
                    "Label column", label_options, index=label_options.index("label") if "label" in columns else 0
                )
                full = load_user_file(stored, text_column, None if label_column == "(none)" else label_column)
                full = dataclasses.replace(full, name=Path(upload.name).stem)  # the user's name, not the stored hash
    except (ValueError, DataError) as error:
        message = str(error)
        if upload is not None and stored is not None:  # the user knows their file's name, not the stored copy's
            message = message.replace(str(stored), upload.name).replace(stored.name, upload.name)
        st.error(f"Cannot use this data: {message}")
        st.stop()
    if len(full) <= 100:
        st.caption(f"All {len(full)} texts are used.")
        return full
    top = min(max_texts, len(full))
    size = st.slider(
        f"Texts (seeded sample of {len(full)})", 100, top, step=50,
        **kept(f"{key}_size", min(1000, top), bounds=(100, top), url="size"),
    )  # fmt: skip
    return sample_dataset(full, min(int(size), len(full)))


UPLOAD_TYPES = ["csv", "tsv", "jsonl", "json", "parquet", "txt"]


def upload_texts(key: str, max_texts: int):
    """A file upload (a table with a text and an optional label column, or a ``.txt`` with one text per line) read
    by core.data's readers, the explorer's; beyond ``max_texts`` texts a seeded sample of that many.

    Returns:
        The :class:`core.data.Dataset` (named after the uploaded file, labels None when no label column), or None
        before a file is given. A file the readers refuse stops the page with their message, naming the user's
        file (not the stored copy).
    """
    from core.data import DataError, file_columns, load_user_file, sample_dataset, save_upload
    from core.data.dataset import Dataset, content_sha256
    from core.data.user_files import iter_texts

    upload = st.file_uploader(
        "CSV, TSV, JSONL, JSON, parquet or TXT (one text per line), max 20 MB", type=UPLOAD_TYPES, key=f"{key}_file"
    )
    if upload is None:
        return None
    stored = None
    try:
        stored = save_upload(upload.name, upload.getvalue())
        if stored.suffix == ".txt":
            texts = list(iter_texts(stored))
            full = Dataset(upload.name, texts, None, content_sha256(texts, None), upload.name)
        else:
            columns = file_columns(stored)
            left, right = st.columns(2)
            text_column = left.selectbox(
                "Text column", columns, index=columns.index("text") if "text" in columns else 0, key=f"{key}_text"
            )
            options = ["(none)", *columns]
            label_column = right.selectbox(
                "Label column", options, index=options.index("label") if "label" in columns else 0, key=f"{key}_label"
            )
            read = load_user_file(stored, text_column, None if label_column == "(none)" else label_column)
            full = Dataset(upload.name, read.texts, read.labels, read.sha256, upload.name)
    except (ValueError, DataError) as error:
        message = str(error)
        if stored is not None:  # the user knows their file's name, not the stored copy's
            message = message.replace(str(stored), upload.name).replace(stored.name, upload.name)
        st.error(f"Cannot use {upload.name}: {message}")
        st.stop()
    if len(full) > max_texts:
        st.caption(f"{upload.name} holds {len(full)} texts: a seeded sample of {max_texts} is compared.")
        return sample_dataset(full, max_texts)
    return full


def selected_points(chart_key: str) -> list[int]:
    """Text indices (the traces' customdata) selected in the plotly chart ``chart_key`` on the last run."""
    event = st.session_state.get(chart_key)
    points = (event or {}).get("selection", {}).get("points", []) if event else []
    return [int(np.ravel(p["customdata"])[0]) for p in points if "customdata" in p]


def progress_with_eta(bar: Any, what: str, unit: str = "texts") -> Callable[[int, int], None]:
    """A ``progress(done, total)`` callback that fills ``bar`` (an ``st.progress``) and says the time left.

    Each report is a Streamlit call, so it is also where a click on :func:`stop_button` ends the work.
    """
    started = time.perf_counter()

    def report(done: int, total: int) -> None:
        elapsed = time.perf_counter() - started
        eta = f", about {elapsed / done * (total - done):.0f} s left" if done else ""
        bar.progress(min(done / max(total, 1), 1.0), text=f"{what}: {done} of {total} {unit}{eta}")

    return report


def stop_button(flag: str, inputs: Any) -> Any:
    """A Stop button for long work on ``inputs``; returns its slot (empty it when the work is done).

    A click while the work runs makes Streamlit end the run at the work's next progress report (between batches)
    and run the page again, with ``flag`` set to ``inputs``: the page then shows what was stopped instead of
    starting over (:func:`was_stopped`), and every control works as before.
    """
    st.session_state[flag + ":running"] = inputs
    slot = st.empty()
    slot.button("Stop", key=f"{flag}_button", on_click=mark_stopped, args=(flag,))
    return slot


def mark_stopped(flag: str) -> None:
    """The Stop button's callback: the running work's inputs become the stopped ones."""
    st.session_state[flag] = st.session_state.get(flag + ":running")


def was_stopped(flag: str, inputs: Any) -> bool:
    return st.session_state.get(flag) == inputs


def clear_stopped(flag: str) -> None:
    st.session_state.pop(flag, None)
    st.session_state.pop(flag + ":requested", None)


def start_button(label: str, flag: str, inputs: Any) -> bool:
    """A primary button that starts the work on ``inputs``: True once it was clicked for these inputs, until
    :func:`clear_stopped` (call it when the work starts).

    The click is kept by a callback, which Streamlit runs before the page's next run begins: a plain button's
    True lasts one run only, so a rerun requested between the click and the work (another widget, a second
    click) would lose it and leave the page waiting.
    """
    st.button(label, type="primary", key=f"{flag}_start", on_click=_mark_requested, args=(flag, inputs))
    return st.session_state.get(flag + ":requested") == inputs


def _mark_requested(flag: str, inputs: Any) -> None:
    st.session_state[flag + ":requested"] = inputs
