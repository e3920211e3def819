"""Embedding Lens workbench: ``streamlit run workbench/app.py``.

Navigation and shared state only (``workbench/state.py``); each page lives in ``pages/`` and calls
``core``/``analysis``.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

PAGES = Path(__file__).resolve().parents[1] / "pages"

# (file, title, icon): one page each, in the order a new user meets them.
PAGE_FILES = [
    ("overview.py", "Overview", ":material/home:"),
    ("embed.py", "Embed & compare", ":material/compare_arrows:"),
    ("attention.py", "Attention", ":material/visibility:"),
    ("cluster_explorer.py", "Cluster explorer", ":material/scatter_plot:"),
    ("clustering_quality.py", "Clustering quality", ":material/leaderboard:"),
    ("attribution.py", "Attribution", ":material/insights:"),
    ("adapters.py", "Adapters", ":material/tune:"),
]

st.set_page_config(page_title="Embedding Lens", layout="wide")
pages = [
    st.Page(PAGES / name, title=title, icon=icon, default=i == 0) for i, (name, title, icon) in enumerate(PAGE_FILES)
]
st.navigation(pages).run()
