"""Two saved embedding runs of the same texts (``python -m core.embed`` outputs) as a pair to compare.

A run is ``NAME.npy`` (float ``(texts, dim)``, read with ``allow_pickle=False``) and, beside it, ``NAME.json``
(the settings sidecar ``core.embed`` writes). The texts come from a text file read by the same reader
``core.embed`` uses (``core.data.user_files.iter_texts``), so row ``i`` is the ``i``-th non-empty text. A pair is
refused, with the reason, when the row counts disagree with the text file, or when a sidecar names an input
file on this machine whose texts differ from the given ones. Nothing in the folders is executed or unpickled.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.data.user_files import iter_texts, load_user_file
from core.runtime.errors import UserFileError

__all__ = ["Run", "RunPair", "load_pair", "load_run", "query_settings", "read_texts", "texts_sha256"]


@dataclass(frozen=True)
class Run:
    """One saved run: its vectors and its sidecar settings (empty when there is no sidecar)."""

    path: Path
    vectors: np.ndarray
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.stem


@dataclass(frozen=True)
class RunPair:
    """Two runs over the same texts: ``runs[0].vectors[i]`` and ``runs[1].vectors[i]`` both embed ``texts[i]``."""

    runs: tuple[Run, Run]
    texts: list[str]
    labels: list[str] | None

    @property
    def names(self) -> tuple[str, str]:
        """Side names for tables and plots: the two file stems, made distinct when they are equal."""
        first, second = self.runs[0].name, self.runs[1].name
        if first == second:
            first, second = f"{self.runs[0].path.parent.name}/{first}", f"{self.runs[1].path.parent.name}/{second}"
        return (first, second) if first != second else (f"A:{first}", f"B:{second}")


def texts_sha256(texts: list[str]) -> str:
    return hashlib.sha256(json.dumps(texts, ensure_ascii=False).encode()).hexdigest()


def load_run(path: str | Path) -> Run:
    """The vectors of ``path`` (a ``.npy``) and the sidecar ``.json`` beside it, if any."""
    path = Path(path)
    if path.suffix != ".npy":
        raise UserFileError(f"{path} is not a .npy file; give the vectors file `core.embed --output` wrote.")
    if not path.is_file():
        raise UserFileError(f"{path} does not exist; check the path of the saved run.")
    try:
        vectors = np.load(path, allow_pickle=False, mmap_mode="r")
    except (OSError, ValueError) as error:
        raise UserFileError(
            f"{path} is not a readable .npy matrix ({error}); embed again with python -m core.embed."
        ) from None
    if vectors.ndim != 2 or not np.issubdtype(vectors.dtype, np.floating) or vectors.shape[0] == 0:
        raise UserFileError(
            f"{path} holds a {vectors.dtype} array of shape {vectors.shape}; a run is a float (texts, dim) matrix."
        )
    settings: dict[str, Any] = {}
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        try:
            loaded = json.loads(sidecar.read_text(encoding="utf-8"))
            settings = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            warnings.warn(f"{sidecar} is not readable JSON: its settings are not shown", stacklevel=2)
    return Run(path, np.array(vectors, dtype=np.float32), settings)


def read_texts(path: str | Path, text_column: str = "text", label_column: str | None = None):
    """``(texts, labels or None)`` of a text file, rows as ``core.embed`` numbers them.

    Labels need every row with text to have a label too; otherwise rows would shift, so that is refused.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        texts = list(iter_texts(path, text_column))
    labels = None
    if label_column:
        if Path(path).suffix.lower() == ".txt":
            raise UserFileError(f"{path} is a .txt file and has no columns; give a CSV/JSONL with {label_column!r}.")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = load_user_file(path, text_column, label_column)
        if dataset.texts != texts:
            raise UserFileError(
                f"{path}: some rows with text have an empty {label_column!r}, so labels would not line up with the "
                "vectors; fill those labels or leave the label column out."
            )
        labels = dataset.labels
    return texts, labels


def _check_rows(run: Run, texts: list[str], text_file: Path, text_column: str) -> None:
    if run.vectors.shape[0] != len(texts):
        raise UserFileError(
            f"{run.path} has {run.vectors.shape[0]} rows but {text_file} has {len(texts)} texts: the run embedded "
            "other texts. Compare runs made from this text file (python -m core.embed --input it)."
        )
    source = run.settings.get("input")
    if not source or not Path(str(source)).is_file() or Path(str(source)).resolve() == text_file.resolve():
        return
    try:
        theirs, _ = read_texts(source, text_column)
    except UserFileError:
        return  # another format or column: the row count above is the check that remains
    if texts_sha256(theirs) != texts_sha256(texts):
        raise UserFileError(
            f"{run.path} was embedded from {source}, whose texts differ from {text_file}; the text lists differ, "
            "so rows would not match. Give the text file that run embedded."
        )


def load_pair(
    first: str | Path,
    second: str | Path,
    text_file: str | Path,
    text_column: str = "text",
    label_column: str | None = None,
) -> RunPair:
    """Two runs and their texts, checked to be the same texts in the same order (see the module docstring)."""
    text_file = Path(text_file)
    texts, labels = read_texts(text_file, text_column, label_column)
    runs = (load_run(first), load_run(second))
    for run in runs:
        _check_rows(run, texts, text_file, text_column)
    return RunPair(runs, texts, labels)


def query_settings(run: Run, identity_base: dict[str, Any], identity_adapter: dict[str, Any] | None) -> dict[str, Any]:
    """How to embed a search query as ``run`` embedded its texts, with an encoder whose model identities are given.

    Args:
        identity_base / identity_adapter: ``LoadedModel.identity(False)`` / ``identity(True)`` of the loaded model
            (the adapter one None without an adapter).

    Returns:
        ``Encoder.with_setting`` arguments (method, prompt, pooling, layer, max_length) plus ``use_adapter``.

    Raises:
        UserFileError: the run has no sidecar settings, or was embedded by another model or adapter (the message
        names the model to choose).
    """
    settings = run.settings
    if not settings.get("model") or not settings.get("mode"):
        raise UserFileError(f"{run.path} has no settings sidecar (.json): search cannot embed a query like it.")
    wanted = {key: settings.get(key) for key in ("model", "weights_sha256", "adapter_sha256")}
    for use_adapter, identity in ((False, identity_base), (True, identity_adapter)):
        if identity is not None and all(identity.get(key) == value for key, value in wanted.items()):
            return {"method": settings.get("method_spec") or "plain", "prompt": settings.get("prompt"),
                    "pooling": settings["mode"], "layer": str(settings.get("layer", "-1")),
                    "max_length": settings.get("max_length"), "use_adapter": use_adapter}  # fmt: skip
    adapter = " with the adapter it used" if settings.get("adapter_sha256") else ""
    raise UserFileError(
        f"{run.name} was embedded by {settings['model']}{adapter}; choose that model in the sidebar to search it."
    )
