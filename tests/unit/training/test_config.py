"""TrainConfig: the shipped recipe as defaults, one validation, the flat saved form, options from its fields."""

from __future__ import annotations

import dataclasses
import json

import pytest

from core.encoding.setting import EmbeddingSetting
from core.runtime.errors import LensError, TrainError
from core.runtime.paths import REPO_ROOT
from core.training.cli import build_parser, config_from_args
from core.training.config import TrainConfig

RECIPES = sorted((REPO_ROOT / "adapters").glob("*.json"))
ADAPTERS = sorted(path.parent for path in (REPO_ROOT / "adapters").glob("*/embedding_lens.json"))


def test_the_shipped_recipes_are_found():
    assert {path.stem for path in RECIPES} >= {"smollm2-135m-embed", "gemma3-270m-embed"}
    assert len(ADAPTERS) >= 2


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda path: path.stem)
def test_every_recipe_setting_is_the_default(recipe):
    """``python -m core.train --pairs P --out O`` makes the recommended adapter: no flag needed but the model."""
    values = json.loads(recipe.read_text())
    defaults = TrainConfig().to_dict()
    differing = {key: (value, defaults[key]) for key, value in values.items() if defaults[key] != value}
    assert set(differing) <= {"base_model"}, differing
    assert TrainConfig.from_dict(values) == TrainConfig(base_model=values["base_model"])


def test_the_plain_command_builds_the_default_config(tmp_path):
    args = build_parser().parse_args(["--out", str(tmp_path / "o"), "--pairs", "p.jsonl"])
    config = config_from_args(args)
    assert config == TrainConfig(pairs="p.jsonl")
    assert config.embedding == EmbeddingSetting(prompt="eol-noquote", pooling="last", layer=-1, max_length=64)


def test_a_recipe_file_then_flags(tmp_path):
    recipe = REPO_ROOT / "adapters" / "gemma3-270m-embed.json"
    args = build_parser().parse_args(["--out", "o", "--config", str(recipe), "--steps", "7", "--pooling", "mean"])
    config = config_from_args(args)
    assert (config.base_model, config.steps, config.embedding.pooling) == ("gemma3-270m", 7, "mean")
    assert config.replace(steps=100, pooling="last") == TrainConfig.from_dict(json.loads(recipe.read_text()))


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda path: path.name)
def test_committed_adapters_settings_read_unchanged(adapter):
    """The flat form written before the setting type (metadata ``training``, card ``settings``) reads back as is."""
    saved = json.loads((adapter / "embedding_lens.json").read_text())["training"]
    config = TrainConfig.from_dict(saved)
    assert config.to_dict() == saved
    assert config.differences(saved) == []
    card = json.loads((adapter / "card.json").read_text())["settings"]
    assert TrainConfig.from_dict(card).to_dict() == card


def test_a_config_saved_before_newer_settings_counts_them_at_their_default():
    old = {key: value for key, value in TrainConfig().to_dict().items() if key not in ("hard_negatives", "eval_docs")}
    old |= {"prompt": "cluster", "layer": -1}
    config = TrainConfig.from_dict(old)
    assert config.embedding.prompt == "cluster" and config.differences(old) == []
    assert config.replace(prompt="eol").differences(old) == ["prompt: checkpoint 'cluster' vs now 'eol'"]
    assert config.replace(device="cpu", progress=False).differences(old) == []  # free to change on resume


def test_the_config_is_frozen_and_replace_validates():
    config = TrainConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.steps = 3  # type: ignore[misc]
    with pytest.raises(TrainError, match="no in-batch negatives"):
        config.replace(batch_size=1)
    assert config.replace(prompt="cluster").embedding.prompt == "cluster" and config.embedding.prompt == "eol-noquote"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"batch_size": 1}, "no in-batch negatives"),
        ({"steps": 0}, "steps >= 1"),
        ({"lr": 0.0}, "lr > 0"),
        ({"temperature": -1.0}, "temperature > 0"),
        ({"micro_batch_size": -1}, "micro_batch_size must be >= 0"),
        ({"lora_layers": -2}, "lora_layers must be >= 0"),
        ({"lora_dropout": 1.0}, r"lora_dropout must be in \[0, 1\)"),
        ({"lora_r": 0}, "lora_r >= 1"),
        ({"n_pairs": 0}, "n_pairs must be at least 1"),
        ({"keep_checkpoints": 0}, "keep_checkpoints"),
        ({"precision": "fp8"}, "precision 'fp8': choose one of"),
        ({"steps": "100"}, "steps must be a int, got '100'"),
        ({"symmetric": 1}, "symmetric must be a bool"),
        ({"target_modules": []}, "target_modules is empty"),
        ({"method": "echo"}, "training uses the plain method"),
        ({"lora_rank": 8}, "unknown keys: lora_rank"),
    ],
)
def test_bad_settings_are_refused_by_name(values, message):
    with pytest.raises(TrainError, match=message):
        TrainConfig.from_dict(values)


def test_the_embedding_setting_validates_its_part():
    with pytest.raises(LensError, match="max_length"):
        TrainConfig.from_dict({"max_length": 2})
    with pytest.raises(LensError, match="pooling"):
        TrainConfig.from_dict({"pooling": "median"})


def test_recipe_values_are_normalised():
    config = TrainConfig.from_dict({"margin": 0, "target_modules": "q, v", "layer": -1})
    assert config.margin == 0.0 and isinstance(config.margin, float)
    assert config.target_modules == ("q", "v") and config.to_dict()["target_modules"] == ["q", "v"]
    assert config.to_dict()["layer"] == "-1"


def test_each_option_help_is_written_once_on_its_field():
    parser = build_parser()
    helps = {action.dest: action.help or "" for action in parser._actions}
    for spec in dataclasses.fields(TrainConfig):
        if spec.name != "embedding":
            assert helps[spec.name].startswith(spec.metadata["help"]), spec.name
    for name in ("prompt", "pooling", "layer"):
        assert helps[name].startswith(EmbeddingSetting.__dataclass_fields__[name].metadata["help"])
    assert helps["max_length"].endswith("(default: 64 in training)")
    assert "method" not in helps  # training is of the plain method


def test_flags_override_the_recipe_before_validation(tmp_path):
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"lora_layers": -1, "steps": 5}))
    parse = build_parser().parse_args
    with pytest.raises(TrainError, match="lora_layers must be >= 0"):
        config_from_args(parse(["--out", "o", "--config", str(recipe)]))
    assert config_from_args(parse(["--out", "o", "--config", str(recipe), "--lora-layers", "0"])).steps == 5
    recipe.write_text(json.dumps({"lora_rank": 8}))
    with pytest.raises(TrainError, match=f"config {recipe} has unknown keys: lora_rank"):
        config_from_args(parse(["--out", "o", "--config", str(recipe)]))
