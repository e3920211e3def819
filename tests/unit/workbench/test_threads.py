"""The app's OpenMP wait policy: passive unless the user chose, and said too late once torch is loaded."""

from __future__ import annotations

import os

from workbench.threads import WAIT_POLICY, prefer_sleeping_waits


def test_sleeping_waits_are_preferred_unless_the_user_chose(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert prefer_sleeping_waits() is False  # the test process loaded torch already: too late for it
    assert os.environ["OMP_WAIT_POLICY"] == WAIT_POLICY["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    prefer_sleeping_waits()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
