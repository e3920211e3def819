"""Embedding Lens workbench: ``streamlit run workbench/app.py``.

Navigation and shared state only (``workbench/state.py``); each page lives in ``pages/`` and calls
``core``/``analysis``.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from core.runtime.errors import configure_environment
from workbench.state import PAGE_FILES

configure_environment()  # before any page loads a model: hub calls fail at once unless HF_HUB_OFFLINE=0

PAGES = Path(__file__).resolve().parents[1] / "pages"

st.set_page_config(page_title="Embedding Lens", layout="wide")
pages = [
    st.Page(PAGES / name, title=title, icon=icon, default=i == 0) for i, (name, title, icon) in enumerate(PAGE_FILES)
]
st.navigation(pages).run()
