"""core.runtime.browser: kaleido (plotly's PNG export) pointed at Debian's chromium."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from core.runtime import browser


@pytest.fixture
def no_browser_path(monkeypatch):
    """BROWSER_PATH unset for the test and restored (to whatever it was) after it."""
    monkeypatch.setenv("BROWSER_PATH", "placeholder")  # records the original value for the undo
    monkeypatch.delenv("BROWSER_PATH")
    return monkeypatch


def test_a_browser_path_the_user_set_wins(monkeypatch):
    monkeypatch.setenv("BROWSER_PATH", "/opt/my/chrome")
    assert browser.configure_png_export() == Path("/opt/my/chrome")
    assert browser.os.environ["BROWSER_PATH"] == "/opt/my/chrome"


def test_debian_chromium_becomes_browser_path(no_browser_path, tmp_path):
    fake = tmp_path / "chromium"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    no_browser_path.setattr(browser, "DEBIAN_CHROMIUM", fake)
    assert browser.configure_png_export() == fake
    assert browser.os.environ["BROWSER_PATH"] == str(fake)


def test_without_chromium_nothing_is_set(no_browser_path, tmp_path):
    no_browser_path.setattr(browser, "DEBIAN_CHROMIUM", tmp_path / "missing")
    no_browser_path.setenv("PATH", str(tmp_path))
    assert browser.configure_png_export() is None
    assert "BROWSER_PATH" not in browser.os.environ


def test_png_export_of_a_tiny_figure(no_browser_path, tmp_path):
    if browser.find_chromium() is None:
        pytest.skip(f"Debian's chromium is not installed: {browser.INSTALL_HINT}")
    import plotly.graph_objects as go

    assert browser.configure_png_export() is not None
    figure = go.Figure(go.Bar(x=["a", "b", "c"], y=[3, 1, 2]))
    out = tmp_path / "tiny.png"
    figure.write_image(out, width=240, height=160, scale=1)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == (240, 160)  # IHDR width, height
