"""The workbench renders without exceptions (streamlit's AppTest, no browser)."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[2] / "workbench" / "app.py")


def test_overview_renders():
    app = AppTest.from_file(APP, default_timeout=60).run()
    assert not app.exception
    assert app.title[0].value == "Embedding Lens"
    assert any("smollm2-135m" in str(table.value) for table in app.table)
