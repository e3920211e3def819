"""The embedding setting: defaults, validation, resolution against an adapter's trained setting."""

from __future__ import annotations

import argparse
import json

import pytest

from core.encoding.pooling import LayerChoice
from core.encoding.setting import EmbeddingSetting
from core.runtime.arguments import add_arguments, from_arguments
from core.runtime.errors import ConfigError
from core.runtime.paths import REPO_ROOT


def test_the_defaults_are_the_shipped_recipe():
    recipe = json.loads((REPO_ROOT / "adapters" / "smollm2-135m-embed.json").read_text())
    setting = EmbeddingSetting()
    assert (setting.method, setting.prompt, setting.pooling, str(setting.layer)) == (
        "plain", recipe["prompt"], recipe["pooling"], recipe["layer"])  # fmt: skip


@pytest.mark.parametrize(
    ("method", "prompt", "pooling"),
    [
        ("echo", None, "mean"),
        ("tp", None, "last"),
        ("metaeol", None, "last"),
        ("plain", "none", "mean"),
        ("plain", "cluster", "last"),
    ],
)
def test_each_method_defaults_to_its_published_pooling(method, prompt, pooling):
    assert EmbeddingSetting(method=method, prompt=prompt).pooling == pooling


def test_construction_canonicalises_so_equal_settings_compare_equal():
    assert EmbeddingSetting(layer="-1") == EmbeddingSetting(layer=-1) == EmbeddingSetting(layer=LayerChoice())
    assert EmbeddingSetting(method=" TP ").method == "tp:1-"
    assert EmbeddingSetting(layer="last4").to_dict()["layer"] == "last4"
    assert EmbeddingSetting.from_dict(EmbeddingSetting(method="echo").to_dict()) == EmbeddingSetting(method="echo")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"pooling": "max"}, "Unknown pooling"),
        ({"method": "metaeol", "prompt": "eol"}, "brings its own prompts"),
        ({"max_length": 3}, "too small"),
        ({"layer": "top"}, "Bad layer"),
        ({"prompt": "no slot"}, "placeholder"),
        ({"method": "tp", "prompt": "eol"}, "token-prepending template"),
    ],
)
def test_bad_settings_fail_on_construction_naming_the_fix(values, message):
    with pytest.raises(ConfigError, match=message):
        EmbeddingSetting(**values)


def test_resolve_starts_from_the_adapters_setting_and_applies_the_users_choices():
    trained = {"prompt": "cluster", "pooling": "weighted", "layer": "-1", "max_length": 64, "lora_r": 16}
    assert EmbeddingSetting.resolve(trained) == EmbeddingSetting(prompt="cluster", pooling="weighted", max_length=64)
    assert EmbeddingSetting.resolve(trained, pooling="mean", layer=None).pooling == "mean"
    # Another method starts from its own prompt and pooling; the trained length stays.
    assert EmbeddingSetting.resolve(trained, method="echo") == EmbeddingSetting(method="echo", max_length=64)
    assert EmbeddingSetting.resolve(None) == EmbeddingSetting()
    with pytest.raises(TypeError, match="lora_r"):
        EmbeddingSetting.resolve(None, lora_r=8)


def test_cli_options_come_from_the_fields_and_build_the_same_setting():
    parser = argparse.ArgumentParser()
    add_arguments(parser, EmbeddingSetting)
    args = parser.parse_args(["--pooling", "mean", "--layer", "last2", "--max-length", "128"])
    assert from_arguments(EmbeddingSetting, args) == EmbeddingSetting(pooling="mean", layer="last2", max_length=128)
    assert from_arguments(EmbeddingSetting, parser.parse_args([])) == EmbeddingSetting()
    assert "method's published pooling" in parser.format_help()
    with pytest.raises(SystemExit):
        parser.parse_args(["--pooling", "max"])
