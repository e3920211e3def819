"""Unit tests: which ones are ``slow`` (end-to-end runs on the tiny model), so ``make test-unit`` can skip them.

They still run in ``make test``. A test is slow when it drives a whole CLI, grid, report, export or training job,
or imports the package afresh in a subprocess; the rest check one function in well under a second.
"""

from __future__ import annotations

import pytest

# Node-id prefixes (a whole module, or a test-name prefix within one).
SLOW = (
    "tests/unit/training/test_train_jobs.py::",
    "tests/unit/clustering/test_clustering.py::",
    "tests/unit/clustering/test_clustering_errors.py::",
    "tests/unit/clustering/test_clustering_methods.py::",
    "tests/unit/faithfulness/test_faithfulness.py::",
    "tests/unit/export/test_export.py::",
    "tests/unit/clustering/test_mteb_results.py::",
    "tests/unit/attention/test_attention.py::test_cli_",
    "tests/unit/attention/test_attention.py::test_run_report_",
    "tests/unit/attention/test_attention.py::test_rows_mode_matches_full_mode",
    "tests/unit/projections/test_projections.py::test_projection_is_cached_on_disk_and_reused",
    "tests/unit/test_architecture.py::test_importing_",
    "tests/unit/clustering/test_mteb_encoder.py::test_importing_",
    "tests/unit/runtime/test_browser.py::test_png_export",
    "tests/unit/encoding/test_streaming.py::test_stream_",
    "tests/unit/encoding/test_streaming.py::test_killed_",
    "tests/unit/encoding/test_streaming.py::test_corrupt_",
    "tests/unit/encoding/test_streaming.py::test_two_processes",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.startswith(SLOW):
            item.add_marker(pytest.mark.slow)
