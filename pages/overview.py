"""Overview: what is loaded and what each page answers."""

from __future__ import annotations

import streamlit as st

from core.models import DEFAULT_MODEL, PACKAGED
from core.pooling import POOLING_DESCRIPTIONS
from core.prompts import PROMPT_DESCRIPTIONS, PROMPTS

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
