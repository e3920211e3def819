"""Embedding Lens workbench: ``streamlit run workbench/app.py``.

Navigation and shared state only; each page lives in ``pages/`` and calls ``core``/``analysis``.
"""

from __future__ import annotations

import streamlit as st

from core.models import DEFAULT_MODEL, PACKAGED
from core.pooling import POOLING_DESCRIPTIONS
from core.prompts import PROMPT_DESCRIPTIONS, PROMPTS


def home() -> None:
    st.title("Embedding Lens")
    st.write(
        "Turn small decoder-only language models into text embedders with prompts, pooling and "
        "contrastive LoRA, and see why they work."
    )
    st.subheader("Models")
    st.table({"name": list(PACKAGED), "model": [p.description for p in PACKAGED.values()]})
    st.caption(f"Default: {DEFAULT_MODEL}. Any local folder or hub id works too.")
    st.subheader("Prompts")
    st.table({"name": list(PROMPTS), "what": list(PROMPT_DESCRIPTIONS.values()), "template": list(PROMPTS.values())})
    st.subheader("Pooling")
    st.table({"mode": list(POOLING_DESCRIPTIONS), "what": list(POOLING_DESCRIPTIONS.values())})


st.set_page_config(page_title="Embedding Lens", layout="wide")
navigation = st.navigation([st.Page(home, title="Overview", default=True)])
navigation.run()
