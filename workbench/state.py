"""Shared state of the workbench: the chosen model and adapter, loaded once per process.

Pages call :func:`model_choice` (sidebar widgets, same choice on every page) and
:func:`encoder_for` (a cached :class:`core.encoder.Encoder` that serves base and adapter from one
model in memory). Nothing here draws a page; everything heavy lives in ``core``/``analysis``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from core.models import DEFAULT_MODEL, PACKAGED

REPO = Path(__file__).resolve().parents[1]
ADAPTERS_DIR = REPO / "adapters"
# The adapter shipped with the project (issue 4), used out of the box when it exists.
DEFAULT_ADAPTER = ADAPTERS_DIR / "smollm2-135m-embed"
NO_ADAPTER = "(none: base model only)"
TRAIN_COMMAND = "make adapter   # or: python -m core.train --pairs PAIRS.jsonl --out adapters/NAME"


@dataclass(frozen=True)
class ModelChoice:
    model: str
    adapter: str | None  # a folder, or None for the base model alone

    @property
    def label(self) -> str:
        return f"{self.model} + {Path(self.adapter).name}" if self.adapter else self.model


def list_adapters(root: Path = ADAPTERS_DIR) -> list[Path]:
    """Adapter folders (a peft ``adapter_config.json`` inside) under ``root``, shipped one first."""
    if not root.is_dir():
        return []
    found = sorted(p.parent for p in root.glob("*/adapter_config.json"))
    return sorted(found, key=lambda p: p != DEFAULT_ADAPTER)


def model_choice() -> ModelChoice:
    """Sidebar: model and adapter, kept in the session so every page shows the same pair."""
    models = [*PACKAGED, "custom folder or hub id..."]
    with st.sidebar:
        st.header("Model")
        picked = st.selectbox("Base model", models, index=models.index(DEFAULT_MODEL), key="model_pick")
        model = picked
        if picked == models[-1]:
            model = st.text_input("Folder or hub id", key="model_custom").strip() or DEFAULT_MODEL
        adapters = [str(p) for p in list_adapters()]
        options = [*adapters, NO_ADAPTER]
        adapter = st.selectbox("LoRA adapter", options, index=0, key="adapter_pick")
        custom = st.text_input("...or an adapter folder", key="adapter_custom").strip()
        chosen = custom or (None if adapter == NO_ADAPTER else adapter)
        if chosen is None and not adapters:
            st.caption(f"No adapter under `{ADAPTERS_DIR.name}/`. Make one with `{TRAIN_COMMAND}`.")
    return ModelChoice(model, chosen)


@st.cache_resource(show_spinner="Loading model (first time only)...", max_entries=2)
def encoder_for(model: str, adapter: str | None):
    """One encoder per (model, adapter) per process; its on-disk cache makes repeated texts instant."""
    from core.encoder import Encoder

    return Encoder(model, adapter=adapter)


def load_encoder(choice: ModelChoice):
    """The cached encoder for ``choice``, or None after showing a friendly error in the page."""
    if choice.adapter is not None and not Path(choice.adapter).is_dir():
        st.error(f"Adapter folder `{choice.adapter}` does not exist. Make one with `{TRAIN_COMMAND}`.")
        return None
    try:
        return encoder_for(choice.model, choice.adapter)
    except (ValueError, OSError, RuntimeError) as error:
        st.error(f"Could not load {choice.label}: {error}")
        return None
