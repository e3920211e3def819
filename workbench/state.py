"""Shared state of the workbench: the chosen model and adapter, loaded once per process.

Pages call :func:`model_choice` (sidebar widgets, same choice on every page) and
:func:`encoder_for` (a cached :class:`core.encoder.Encoder` that serves base and adapter from one
model in memory). Nothing here draws a page; everything heavy lives in ``core``/``analysis``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from core.adapters import ADAPTERS_DIR, list_adapters
from core.models import DEFAULT_MODEL, PACKAGED

REPO = Path(__file__).resolve().parents[1]
NO_ADAPTER = "(none: base model only)"
# The navigation, (file in pages/, title, icon), in the order a new user meets them; app.py draws it.
PAGE_FILES = [
    ("overview.py", "Overview", ":material/home:"),
    ("embed.py", "Embed & compare", ":material/compare_arrows:"),
    ("attention.py", "Attention", ":material/visibility:"),
    ("cluster_explorer.py", "Cluster explorer", ":material/scatter_plot:"),
    ("clustering_quality.py", "Clustering quality", ":material/leaderboard:"),
    ("attribution.py", "Attribution", ":material/insights:"),
    ("adapters.py", "Adapters", ":material/tune:"),
]
TRAIN_COMMAND = "make adapter   # or: python -m core.train --pairs PAIRS.jsonl --out adapters/NAME"


@dataclass(frozen=True)
class ModelChoice:
    model: str
    adapter: str | None  # a folder, or None for the base model alone

    @property
    def label(self) -> str:
        return f"{self.model} + {Path(self.adapter).name}" if self.adapter else self.model


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


CUSTOM_PROMPT = "custom template..."


def embedding_settings(key: str, *, default_prompt: str | None = None, layers: int | None = None):
    """Prompt (named or custom), pooling and layer widgets; returns (prompt, pooling, layer) or None if invalid."""
    from core.pooling import POOLING_DESCRIPTIONS, POOLING_MODES
    from core.prompts import PROMPTS, resolve_prompt

    names = [*PROMPTS, CUSTOM_PROMPT]
    start = names.index(default_prompt) if default_prompt in names else names.index("eol")
    columns = st.columns(3)
    name = columns[0].selectbox("Prompt", names, index=start, key=f"{key}_prompt")
    prompt = name
    if name == CUSTOM_PROMPT:
        prompt = st.text_input("Template with one {text}", 'In one word, "{text}" is about:', key=f"{key}_template")
        try:
            resolve_prompt(prompt)
        except ValueError as error:
            st.error(f"{error}")
            return None
    else:
        columns[0].caption(f"`{PROMPTS[name]}`")
    pooling = columns[1].selectbox(
        "Pooling", POOLING_MODES, index=POOLING_MODES.index("last"), key=f"{key}_pooling",
        help="; ".join(f"{m}: {d}" for m, d in POOLING_DESCRIPTIONS.items()),
    )  # fmt: skip
    layer = columns[2].text_input("Layer", "-1", key=f"{key}_layer", help="an index (-1 = last) or lastK (mean)")
    return prompt, pooling, layer.strip() or "-1"


def adapter_prompt_name(encoder) -> str | None:
    """The registry name of the prompt the loaded adapter was trained with, if any."""
    from core.prompts import PROMPTS

    template = encoder.loaded.adapter_metadata.get("prompt")
    return next((name for name, text in PROMPTS.items() if text == template), None)
