"""Shared state of the workbench: the chosen model, adapter and device, loaded once per process.

Pages call :func:`model_choice` (sidebar widgets, same choice on every page) and
:func:`encoder_for` (a cached :class:`core.encoding.encoder.Encoder` that serves base and adapter from one
model in memory). Nothing here draws a page; everything heavy lives in ``core``/``analysis``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import streamlit as st

from core.models.adapters import ADAPTERS_DIR, adapter_name, list_adapters, made_for
from core.models.registry import DEFAULT_MODEL, PACKAGED
from core.runtime.errors import LensError
from core.runtime.paths import cache_root
from core.training.jobs import adapter_label, stopped_checkpoints

if TYPE_CHECKING:
    from core.encoding.setting import EmbeddingSetting

REPO = Path(__file__).resolve().parents[1]
NO_ADAPTER = "(none: base model only)"
CUSTOM_MODEL = "custom folder or hub id..."
# Runs started on the Adapters page go here, not into the repository's adapters/.
TRAINED_DIR = cache_root() / "adapters"
# The navigation, (file in pages/, title, icon), in the order a new user meets them; app.py draws it.
PAGE_FILES = [
    ("overview.py", "Overview", ":material/home:"),
    ("embed.py", "Embed & compare", ":material/compare_arrows:"),
    ("attention.py", "Attention", ":material/visibility:"),
    ("cluster_explorer.py", "Cluster explorer", ":material/scatter_plot:"),
    ("clustering_quality.py", "Clustering quality", ":material/leaderboard:"),
    ("attribution.py", "Attribution", ":material/insights:"),
    ("lens.py", "Lens", ":material/manage_search:"),
    ("adapters.py", "Adapters", ":material/tune:"),
]
TRAIN_COMMAND = "make adapter   # or: python -m core.train --pairs PAIRS.jsonl --out adapters/NAME"


KEEP = "keep:"  # prefix of the session keys that hold widget values between pages (never cleaned up)
# Longer values stay in the session only: Streamlit drops a whole query string that grows too long, and with it
# every setting a bookmark would restore.
MAX_URL_VALUE = 300
# The sidebar's model choice as (kept key, query parameter): pages without the sidebar carry it on in the URL.
MODEL_URL = (("model_pick", "model"), ("adapter_pick", "adapter"), ("max_length", "max_length"), ("device", "device"))


def kept(
    key: str,
    default: Any,
    *,
    options: Sequence[Any] | None = None,
    bounds: tuple[float, float] | None = None,
    url: str | None = None,
) -> dict[str, Any]:
    """Widget arguments that make widget ``key`` keep its value across pages and reruns.

    Streamlit drops a widget's state on a page that does not draw it, so the value also lives under
    ``keep:KEY`` (a plain session key); it is put back into the widget's key before the widget is drawn.
    ``options``/``bounds``: a kept value no longer allowed (another task, a smaller file) falls back to the
    default / is clamped. With ``url``, the value is also a query parameter of that name: a bookmarked URL restores it;
    a value longer than ``MAX_URL_VALUE`` characters is kept in the session only (its parameter is removed).
    Pass the result as ``**kept(...)`` and give the widget no ``value``/``index`` of its own.
    """
    store = KEEP + key
    if store not in st.session_state:
        value = st.session_state.get(key, default)  # a value set before the first run (tests) wins
        if url and url in st.query_params:
            value = _from_url(st.query_params[url], default)
        st.session_state[store] = value
    value = st.session_state[store]
    if options is not None and isinstance(value, list):  # a multiselect keeps the choices still offered
        value = [v for v in value if v in options]
    elif options is not None and value not in options:
        value = default if default in options else options[0]
    if bounds is not None:
        value = type(default)(min(max(value, bounds[0]), bounds[1]))
    st.session_state[key] = value
    if url:
        _to_url(url, value)
    return {"key": key, "on_change": _keep, "args": (key,)}


def _to_url(url: str, value: Any) -> None:
    text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
    if len(text) <= MAX_URL_VALUE:
        st.query_params[url] = text
    elif url in st.query_params:
        del st.query_params[url]


def carry_model_in_url() -> None:
    """Keep the sidebar's model choice in the URL on a page that does not draw the sidebar, so a bookmark or a
    reload of that page still names the model (values chosen earlier in the session, else those already there)."""
    for key, url in MODEL_URL:
        if KEEP + key in st.session_state:
            _to_url(url, st.session_state[KEEP + key])


def forget_in_url(*urls: str) -> None:
    """Remove query parameters that no longer describe the page (e.g. a task after a file was uploaded)."""
    for url in urls:
        if url in st.query_params:
            del st.query_params[url]


def _from_url(text: str, default: Any) -> Any:
    if isinstance(default, bool):
        return text == "True"
    if isinstance(default, list):  # a multiselect's choices, comma-separated
        return [part for part in text.split(",") if part]
    try:
        return type(default)(text) if isinstance(default, int | float) else text
    except ValueError:
        return default


def follow(key: str, value: Any, basis: Any) -> None:
    """Reset the kept value of widget ``key`` to ``value`` whenever ``basis`` changes (call before :func:`kept`),
    e.g. k-means k to a newly uploaded file's label count; while ``basis`` holds, the user's choice is kept."""
    marker = f"{KEEP}{key}:basis"
    if st.session_state.get(marker) != basis:
        st.session_state[marker] = basis
        st.session_state[KEEP + key] = value


def _keep(key: str) -> None:
    st.session_state[KEEP + key] = st.session_state[key]


@dataclass(frozen=True)
class ModelChoice:
    model: str
    adapter: str | None  # a folder, or None for the base model alone
    max_length: int | None = None  # None: the adapter's training length, else 512
    device: str = "auto"  # core.runtime.device: auto (CUDA, then MPS, then CPU) or one this machine has

    @property
    def label(self) -> str:
        name = f"{self.model} + {adapter_name(self.adapter)}" if self.adapter else self.model
        return (
            name
            + (f", max {self.max_length} tokens" if self.max_length else "")
            + (f", on {self.device}" if self.device != "auto" else "")
        )


def adapter_folders(model: str) -> list[str]:
    """Adapters made for ``model``: in the repository, then those trained from the Adapters page (under the cache
    folder), then the checkpoints of stopped runs there (``core.training.jobs.stopped_checkpoints``)."""
    roots = (ADAPTERS_DIR, TRAINED_DIR)
    found = (p for root in roots for p in (*list_adapters(root), *stopped_checkpoints(root)))
    return [str(p) for p in found if made_for(p, model)]


def model_choice() -> ModelChoice:
    """Sidebar: model, adapter, max length and device, kept in the session (and URL) so every page shows the same
    choice."""
    from core.runtime.device import available_devices

    models = [*PACKAGED, CUSTOM_MODEL]
    with st.sidebar:
        st.header("Model")
        model = st.selectbox("Base model", models, **kept("model_pick", DEFAULT_MODEL, options=models, url="model"))
        if model == CUSTOM_MODEL:
            model = st.text_input("Folder or hub id", **kept("model_custom", "")).strip() or DEFAULT_MODEL
        adapters = adapter_folders(model)
        options = [*adapters, NO_ADAPTER]
        adapter = st.selectbox(
            "LoRA adapter", options, format_func=adapter_label,
            **kept("adapter_pick", options[0], options=options, url="adapter"),
        )  # fmt: skip
        custom = st.text_input("...or an adapter folder", **kept("adapter_custom", "")).strip()
        chosen = custom or (None if adapter == NO_ADAPTER else adapter)
        if chosen is None and not adapters:
            st.caption(f"No adapter for {model} under `{ADAPTERS_DIR.name}/`. Make one with `{TRAIN_COMMAND}`.")
        max_length = st.number_input(
            "Max length (tokens, 0 = the adapter's)", min_value=0, max_value=8192, step=32,
            help="Longer texts are cut to this many tokens (prompt included); pages show how many were cut.",
            **kept("max_length", 0, url="max_length"),
        )  # fmt: skip
        devices = ["auto", *available_devices()]  # only devices this machine has: no choice can fail
        device = st.selectbox(
            "Device", devices, help="auto: CUDA, then Apple MPS, then the CPU",
            **kept("device", "auto", options=devices, url="device"),
        )  # fmt: skip
    return ModelChoice(model, chosen, int(max_length) or None, device)


@st.cache_resource(show_spinner="Loading model (first time only)...", max_entries=2)
def encoder_for(model: str, adapter: str | None, max_length: int | None = None, device: str = "auto"):
    """One encoder per (model, adapter, max length, device) per process; its on-disk cache makes repeated texts
    instant."""
    from core.encoding.encoder import Encoder

    return Encoder(model, adapter=adapter, max_length=max_length, device=device)


def load_encoder(choice: ModelChoice):
    """The cached encoder for ``choice``, or None after showing a friendly error in the page."""
    if choice.adapter is not None and not Path(choice.adapter).is_dir():
        st.error(f"Adapter folder `{choice.adapter}` does not exist. Make one with `{TRAIN_COMMAND}`.")
        return None
    try:
        return encoder_for(choice.model, choice.adapter, choice.max_length, choice.device)
    except (ValueError, OSError, RuntimeError) as error:
        st.error(f"Could not load {choice.label}: {error}")
        return None


CUSTOM_PROMPT = "custom template..."


def setting_stem(setting: EmbeddingSetting) -> tuple[str, ...]:
    """The setting as file-name parts: method, a short prompt, pooling, layer."""
    prompt = setting.prompt if setting.prompt is None or len(setting.prompt) < 20 else "custom"
    return (setting.method.replace(":", "").replace("+", "-"), prompt or "", str(setting.pooling), f"L{setting.layer}")


def embedding_settings(key: str, encoder: Any, *, methods: Sequence[str] = ("plain",)) -> EmbeddingSetting | None:
    """Method (when ``methods`` offers more than plain), prompt or template, pooling and layer widgets, kept across
    pages and in the URL.

    Returns the setting they choose over ``encoder``'s adapter's trained one, at its max length
    (:meth:`EmbeddingSetting.resolve`, as every CLI builds it), or None after an error in the page for a bad
    template, method or layer. Checks against the model (a TP layer range beyond its depth) happen in
    :func:`configured_encoder`.
    """
    from core.encoding.methods import ECHO_TEMPLATE, METHOD_DESCRIPTIONS, TP_TEMPLATE, parse_method
    from core.encoding.pooling import POOLING_DESCRIPTIONS, POOLING_MODES
    from core.encoding.prompts import PROMPTS, resolve_prompt
    from core.encoding.setting import DEFAULT_PROMPT, EmbeddingSetting

    # The widgets start at the adapter's trained setting (or the recipe's), as every CLI does.
    trained = EmbeddingSetting.resolve(encoder.loaded.adapter_metadata or None)
    columns = st.columns(4 if len(methods) > 1 else 3)
    kind = "plain"
    if len(methods) > 1:
        kind = columns[0].selectbox(
            "Method", list(methods), help="; ".join(f"{m}: {METHOD_DESCRIPTIONS[m]}" for m in methods),
            **kept(f"{key}_method", "plain", options=list(methods), url="method"),
        )  # fmt: skip
    where = columns[-3]
    method, prompt = kind, None
    if kind == "plain":
        names = [*PROMPTS, CUSTOM_PROMPT]
        default_prompt = adapter_prompt_name(encoder)
        start = default_prompt if default_prompt in names else DEFAULT_PROMPT
        name = where.selectbox("Prompt", names, **kept(f"{key}_prompt", start, options=names, url="prompt"))
        prompt = name
        if name == CUSTOM_PROMPT:
            template = kept(f"{key}_template", 'In one word, "{text}" is about:', url="template")
            prompt = st.text_input("Template with one {text}", **template)
            try:
                resolve_prompt(prompt)
            except ValueError as error:
                st.error(f"{error}")
                return None
        else:
            where.caption(f"`{PROMPTS[name]}`")
    elif kind == "echo":
        prompt = where.text_input(
            "Echo template ({text} twice)", help="pooling reads the second copy only",
            **kept(f"{key}_echo_template", ECHO_TEMPLATE, url="echo_template"),
        )  # fmt: skip
    elif kind == "tp":
        prompt = where.text_input(
            "TP template (<PST>, then {text})", help="<PST> becomes the placeholder token",
            **kept(f"{key}_tp_template", TP_TEMPLATE, url="tp_template"),
        )  # fmt: skip
        layers = st.text_input(
            "TP layers START-EXIT (empty: 1 to about a fifth of the depth)",
            help="the placeholder takes the last token's state before decoder layers START..EXIT-1",
            **kept(f"{key}_tp_layers", "", url="tp_layers"),
        ).strip()
        method = f"tp:{layers}" if layers else "tp"
    elif kind == "ensemble":
        names = list(PROMPTS)
        chosen = st.multiselect(
            "Prompts to average (two or more)", names,
            **kept(f"{key}_ensemble", ["eol", "summarize", "cluster"], options=names, url="ensemble"),
        )  # fmt: skip
        method = "ensemble:" + "+".join(chosen)
    else:  # metaeol
        where.caption(f"{len(parse_method('metaeol').prompts)} task-framed one-word prompts, averaged")
    if prompt == {"echo": ECHO_TEMPLATE, "tp": TP_TEMPLATE}.get(kind):
        prompt = None  # the method's own template, as a CLI without --prompt gives it
    try:
        method = parse_method(method).spec
    except LensError as error:
        st.error(str(error))
        return None
    pooling = columns[-2].selectbox(
        "Pooling", POOLING_MODES, help="; ".join(f"{m}: {d}" for m, d in POOLING_DESCRIPTIONS.items()),
        **kept(f"{key}_pooling", trained.pooling, options=POOLING_MODES, url="pooling"),
    )  # fmt: skip
    layer_widget = kept(f"{key}_layer", str(trained.layer), url="layer")
    layer = columns[-1].text_input("Layer", help="an index (-1 = last) or lastK (mean)", **layer_widget).strip() or "-1"
    try:
        return EmbeddingSetting.resolve(
            encoder.loaded.adapter_metadata or None,
            method=method,
            prompt=prompt,
            pooling=pooling,
            layer=layer,
            max_length=encoder.max_length,
        )
    except LensError as error:
        st.error(str(error))
        return None


def configured_encoder(encoder: Any, setting: EmbeddingSetting, **extra: Any) -> Any:
    """``encoder`` under ``setting`` (and ``extra`` runtime knobs, e.g. precision), sharing its loaded model;
    None after showing the core's message for a setting this model refuses (e.g. a TP range beyond its layers)."""
    try:
        return encoder.with_setting(setting, **extra)
    except LensError as error:
        st.error(str(error))
        return None


def adapter_prompt_name(encoder) -> str | None:
    """The registry name of the prompt the loaded adapter was trained with, if any."""
    from core.encoding.prompts import PROMPTS

    template = encoder.loaded.adapter_metadata.get("prompt")
    return next((name for name, text in PROMPTS.items() if text == template), None)
