"""Embedding Lens workbench: ``streamlit run workbench/app.py`` (or ``make run``), from any folder.

Navigation and shared state only (``workbench/state.py``); each page lives in ``pages/`` and calls
``core``/``analysis``. It listens on 127.0.0.1 (``workbench/.streamlit/config.toml``); another address is said on
every page, and every interface chosen by nobody serves no page (``workbench/serving.py``). torch's OpenMP threads
sleep rather than spin while they wait, so work beside busy processes slows in proportion (``workbench/threads.py``).
"""

from __future__ import annotations

from workbench.threads import prefer_sleeping_waits

prefer_sleeping_waits()  # before anything below loads torch: OpenMP reads it once

import sys  # noqa: E402 - after the OpenMP setting above
from pathlib import Path  # noqa: E402

import streamlit as st  # noqa: E402

from core.runtime.errors import configure_environment  # noqa: E402
from workbench.serving import current_binding  # noqa: E402
from workbench.state import PAGE_FILES  # noqa: E402

configure_environment()  # before any page loads a model: hub calls fail at once unless HF_HUB_OFFLINE=0

PAGES = Path(__file__).resolve().parents[1] / "pages"


@st.cache_resource
def _announce(message: str) -> None:
    """Print the binding warning on the server's terminal once, not once per page view."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


st.set_page_config(page_title="Embedding Lens", layout="wide")
served = current_binding()
if served.level == "refuse":
    _announce(served.message)
    st.error(served.message)
    st.stop()
if served.level == "warn":
    _announce(served.message)
    st.warning(served.message)
pages = [
    st.Page(PAGES / name, title=title, icon=icon, default=i == 0) for i, (name, title, icon) in enumerate(PAGE_FILES)
]
st.navigation(pages).run()
