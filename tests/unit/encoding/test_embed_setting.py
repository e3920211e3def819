"""One embedding setting everywhere: the same adapter metadata and the same user choices give equal
EmbeddingSetting objects through core.embed's parser, the export CLI, the attention report CLI, the grid CLI and
the workbench state.

Each entry point runs its own code up to the moment it hands its setting to an Encoder; the encoder records the
setting and stops the run there (no forward, no file written).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from core.encoding.encoder import Encoder
from core.encoding.setting import EmbeddingSetting
from core.models.adapters import ADAPTER_METADATA, read_metadata

# What the adapter was trained with: deliberately not the recipe's, so a default taken from elsewhere shows.
TRAINED = {"prompt": "cluster", "pooling": "mean", "layer": "-1", "max_length": 40}
# User choices; None = the option not given.
PARTIAL = [
    {},
    {"prompt": "summarize"},
    {"pooling": "eos", "layer": "last2"},
    {"method": "echo"},
    {"max_length": 24},
]
FULL = [
    {"method": "plain", "prompt": "summarize", "pooling": "eos", "layer": "last2", "max_length": 24},
    {"method": "echo", "prompt": None, "pooling": "mean", "layer": "1", "max_length": 48},
    {"method": "plain", "prompt": "none", "pooling": "last", "layer": "-1", "max_length": 40},
]


class Built(Exception):
    """Raised by the recording encoder once an entry point has built its setting."""


@pytest.fixture(scope="module")
def adapter(tiny_model_dir, tiny_adapter_dir, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("trained") / "adapter"
    shutil.copytree(tiny_adapter_dir, folder)
    (folder / ADAPTER_METADATA).write_text(json.dumps({"base_model": str(tiny_model_dir), **TRAINED}))
    return folder


@contextmanager
def recording() -> Iterator[list[EmbeddingSetting]]:
    """Within: the setting an Encoder is configured with is recorded, and stops the entry point there."""
    seen: list[EmbeddingSetting] = []

    def record(self, setting: EmbeddingSetting, **_knobs: Any) -> None:
        seen.append(setting)
        raise Built

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Encoder, "_configure", record)
        yield seen


def built(entry: Callable[[], Any]) -> EmbeddingSetting:
    """The setting ``entry`` (a CLI's main with its arguments) hands to its encoder."""
    with recording() as seen, pytest.raises(Built):
        entry()
    (setting,) = seen
    return setting


def options(choices: dict[str, Any]) -> list[str]:
    argv = []
    for name, value in choices.items():
        if value is not None:
            argv += [f"--{name.replace('_', '-')}", str(value)]
    return argv


def through_embed(tiny_model_dir, adapter, tmp_path, choices) -> EmbeddingSetting:
    from core.embed import main

    texts = tmp_path / "texts.txt"
    texts.write_text("a dog runs\na cat sleeps\n")
    argv = ["--model", str(tiny_model_dir), "--adapter", str(adapter), "--no-cache", "--input", str(texts)]
    return built(lambda: main([*argv, "--output", str(tmp_path / "v.npy"), *options(choices)]))


def through_export(adapter, tmp_path, choices) -> EmbeddingSetting:
    from core.export.folder import main

    return built(lambda: main([str(adapter), "--out", str(tmp_path / "export"), *options(choices)]))


def through_attention(tiny_model_dir, adapter, tmp_path, choices) -> EmbeddingSetting:
    from analysis.attention.report import main

    argv = ["--model", str(tiny_model_dir), "--adapter", str(adapter), "--out", str(tmp_path / "report"), "--n", "4"]
    return built(lambda: main([*argv, *options({**choices, "layer": None})]))  # --layer here is the bars' layer


def through_grid(tiny_model_dir, tmp_path, choices) -> EmbeddingSetting:
    from analysis.clustering.__main__ import build_config, make_parser
    from analysis.clustering.grid import grid_settings

    plural = {"method": "--methods", "prompt": "--prompts", "pooling": "--poolings", "layer": "--layers"}
    argv = ["--models", str(tiny_model_dir), "--tasks", "trec-coarse", "--out", str(tmp_path / "grid")]
    for name, value in choices.items():
        if value is not None:
            argv += [plural.get(name, f"--{name.replace('_', '-')}"), str(value)]
    config = build_config(make_parser().parse_args(argv))
    (setting,) = grid_settings(config, config.max_length)
    return setting


def through_workbench(tiny_model_dir, adapter, choices) -> EmbeddingSetting:
    """The Embed page's widgets (set as a user would, through their session keys) and the sidebar's max length."""
    from streamlit.testing.v1 import AppTest

    def script(model: str, adapter: str, max_length: int | None) -> None:
        import streamlit as st

        from workbench import state

        encoder = state.encoder_for(model, adapter, max_length)
        st.session_state["built"] = state.embedding_settings("embed", encoder, methods=("plain", "echo"))

    app = AppTest.from_function(script, args=(str(tiny_model_dir), str(adapter), choices["max_length"]))
    for name in ("method", "prompt", "pooling", "layer"):
        if choices[name] is not None:
            app.session_state[f"embed_{name}"] = choices[name]
    app.run(timeout=120)
    assert not app.exception, app.exception
    return app.session_state["built"]


@pytest.mark.slow
@pytest.mark.parametrize("choices", PARTIAL, ids=lambda c: ",".join(c) or "nothing")
def test_every_cli_builds_the_same_setting(tiny_model_dir, adapter, tmp_path, choices):
    expected = EmbeddingSetting.resolve(read_metadata(adapter), **choices)
    assert through_embed(tiny_model_dir, adapter, tmp_path, choices) == expected
    assert through_export(adapter, tmp_path, choices) == expected
    if "layer" not in choices:  # the attention report keeps the trained layer (its --layer is the bars')
        assert through_attention(tiny_model_dir, adapter, tmp_path, choices) == expected
    if not choices:
        assert expected == EmbeddingSetting(prompt="cluster", pooling="mean", max_length=40)  # the adapter's


@pytest.mark.slow
@pytest.mark.parametrize("choices", FULL, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_every_cli_and_the_workbench_build_the_same_setting_from_full_choices(
    tiny_model_dir, adapter, tmp_path, choices
):
    expected = EmbeddingSetting.resolve(read_metadata(adapter), **choices)
    assert through_embed(tiny_model_dir, adapter, tmp_path, choices) == expected
    assert through_export(adapter, tmp_path, choices) == expected
    assert through_grid(tiny_model_dir, tmp_path, choices) == expected
    assert through_workbench(tiny_model_dir, adapter, choices) == expected
    if choices["layer"] == "-1":
        assert through_attention(tiny_model_dir, adapter, tmp_path, choices) == expected


@pytest.mark.slow
def test_the_embed_sidecar_names_the_full_setting(tiny_model_dir, adapter, tmp_path):
    from core.embed import main

    texts = tmp_path / "texts.txt"
    texts.write_text("a dog runs\na cat sleeps\n")
    output = tmp_path / "v.npy"
    argv = ["--model", str(tiny_model_dir), "--adapter", str(adapter), "--no-cache", "--precision", "fp32"]
    assert main([*argv, "--input", str(texts), "--output", str(output), "--layer", "last2"]) == 0
    sidecar = json.loads(output.with_suffix(".json").read_text())
    expected = EmbeddingSetting.resolve(read_metadata(adapter), layer="last2")
    assert EmbeddingSetting.from_dict(sidecar["setting"]) == expected
    assert sidecar["setting"] == expected.to_dict()
