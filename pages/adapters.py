"""Adapters: cards and training curves of LoRA adapters; start, stop and resume a small training run and watch it.

Runs go under the cache folder (``state.TRAINED_DIR``) or a folder the user names, never into the repository's
``adapters/``. The watched run is in the URL (``?watch=FOLDER``), so a reload or a bookmark keeps the live view.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from analysis.plots import training_curve
from core.encoding.setting import DEFAULT_PROMPT
from core.models.adapters import ADAPTERS_DIR, SHIPPED_ADAPTER, list_adapters
from core.runtime.errors import LensError
from core.training.jobs import (
    TrainingRequest,
    can_resume,
    job_status,
    read_train_log,
    resume_training,
    start_training,
    stop_training,
)
from workbench import state, widgets


def watch_run(folder: str | Path) -> None:
    st.session_state["watch"] = str(folder)
    st.query_params["watch"] = str(folder)


def resume_button(folder: Path, key: str) -> None:
    """Resume beside a stopped or failed run that left a checkpoint; the run is then watched below."""
    if not can_resume(folder):
        return
    if st.button("Resume", key=key, type="primary", help="continue from its last checkpoint, same settings"):
        try:
            resume_training(folder)
            watch_run(folder)
        except (LensError, OSError) as error:
            st.error(str(error))


widgets.header("Adapters")
folders = [*list_adapters(ADAPTERS_DIR, in_training=True), *list_adapters(state.TRAINED_DIR, in_training=True)]
extra = st.text_input("Another adapter folder", "").strip()
if extra:
    if not Path(extra).is_dir():
        st.error(f"No folder `{extra}`. Make an adapter with `{state.TRAIN_COMMAND}`.")
    else:
        folders.append(Path(extra))
if not folders:
    st.info(f"No adapters under `{ADAPTERS_DIR.name}/` yet. Make one with `{state.TRAIN_COMMAND}` or below.")

for folder in folders:
    status = job_status(folder)
    with st.expander(f"{folder.name}: {status.state}", expanded=folder == SHIPPED_ADAPTER):
        st.caption(f"`{folder}`")
        if status.state == "running":
            st.progress(status.fraction, text=status.phase)
        if status.message and status.state in ("failed", "stopped", "damaged"):
            st.warning(status.message)
        if can_resume(folder):
            listed = folder.parent in (ADAPTERS_DIR, state.TRAINED_DIR)
            where = "" if listed else " (under *...or an adapter folder*: this root is not listed)"
            st.caption(f"Its checkpoints are adapters too: pick one in a model page's sidebar{where}.")
        resume_button(folder, f"resume_{folder}")
        readme = folder / "README.md"
        if readme.is_file():
            st.markdown(readme.read_text())
        rows = read_train_log(folder)
        if rows:
            figure = training_curve(rows, f"{folder.name}: training")
            st.plotly_chart(figure, key=f"curve_{folder}")
            widgets.downloads_row(
                [("figure", (figure, f"{folder.name}_training", f"dl_{folder}")),
                 ("table", (rows, f"{folder.name}_train_log", f"csv_{folder}", "log CSV"))]
            )  # fmt: skip

st.header("Train a small adapter")
choice = state.model_choice()
st.caption(
    f"Runs `python -m core.train` on **{choice.model}** (the sidebar's base model) on device {choice.device}, in the "
    "background on this machine (SmolLM2: a step of batch 16 takes ~5 s with `--lora-layers 8`). It keeps running "
    "if you leave the page; come back (or reload) to watch it."
)
with st.form("train"):
    left, middle, right = st.columns(3)
    name = left.text_input("Name (a new folder)", "my-adapter")
    pairs = middle.text_input("Pairs: `bible` or a pair file (JSONL/TSV)", "bible").strip()
    prompt = right.text_input("Prompt (name or template)", DEFAULT_PROMPT)
    root = st.text_input("Output folder (the run goes into OUTPUT/NAME)", str(state.TRAINED_DIR))
    a, b, c, d = st.columns(4)
    steps = a.number_input("Steps", 2, 2000, 20)
    batch = b.number_input("Batch size (pairs)", 2, 256, 16)
    layers = c.number_input("LoRA on the top k layers (0 = all)", 0, 64, 8)
    # A step below the range's width keeps the ± buttons enabled (Streamlit's float default, 0.01, exceeds it).
    lr = d.number_input("Learning rate", 1e-6, 1e-2, 3e-4, step=1e-4, format="%.1e", key="train_lr")
    submitted = st.form_submit_button("Start training", type="primary")
if submitted:
    if pairs.startswith("~"):  # no shell expands it for the job; relative paths are the repository's, as in the CLI
        pairs = str(Path(pairs).expanduser())
    request = TrainingRequest(
        name, pairs, prompt, steps=int(steps), batch_size=int(batch), lora_layers=int(layers), lr=float(lr),
        base_model=choice.model, device=choice.device,
    )  # fmt: skip
    try:
        folder = request.folder(Path(root.strip() or state.TRAINED_DIR).expanduser())
        start_training(folder, request.options())
        watch_run(folder)
    except (LensError, OSError) as error:
        st.error(str(error))


@st.fragment(run_every=2)
def watch(folder: str) -> None:
    status = job_status(folder)
    st.subheader(f"{Path(folder).name}: {status.state}")
    st.caption(f"`{folder}`")
    if status.state == "running":
        st.progress(status.fraction, text=status.phase)
        if st.button("Stop (a checkpoint is kept; resume it here)", key="watch_stop"):
            stop_training(folder)
    elif status.message:
        words, button = st.columns([4, 1], vertical_alignment="center")
        words.warning(status.message)
        with button:
            resume_button(Path(folder), "watch_resume")
    rows = read_train_log(folder)
    if rows:
        last = rows[-1]
        st.caption(f"loss {last['loss']:.4f}, {last['pairs_per_s']:.2f} pairs/s, peak RSS {last['peak_rss_mb']} MB")
        st.plotly_chart(training_curve(rows, "live"), key="live_curve")


watched = st.session_state.get("watch") or st.query_params.get("watch")
if watched and Path(watched).is_dir():
    watch(watched)
