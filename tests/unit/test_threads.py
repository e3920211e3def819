"""The app's torch threads: the cores other runnable work leaves free, never fewer than one."""

from __future__ import annotations

import pytest
import torch

from workbench import threads


@pytest.mark.parametrize(("runnable", "cores", "expected"), [(1, 2, 2), (2, 2, 1), (3, 2, 1), (30, 2, 1), (2, 8, 7)])
def test_threads_fit_the_free_cores(monkeypatch, runnable, cores, expected):
    monkeypatch.setattr(threads, "_runnable", lambda: runnable)
    before = torch.get_num_threads()
    try:
        assert threads.fit_threads(cores) == expected == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def test_an_unreadable_load_counts_as_quiet(monkeypatch):
    monkeypatch.setattr(threads, "_runnable", lambda: None)
    assert threads.busy_elsewhere() == 0
    readings = iter([5, 1, 9, 5, 5])
    monkeypatch.setattr(threads, "_runnable", lambda: next(readings))
    assert threads.busy_elsewhere() == 4  # the median of the samples, less the caller
