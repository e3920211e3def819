"""Command-line options built from config dataclasses."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest

from core.runtime.arguments import add_arguments, from_arguments, given, option
from core.runtime.errors import ConfigError


@dataclass(frozen=True)
class Config:
    steps: int = option(100, help="optimizer steps")
    lr: float = option(3e-4, help="learning rate")
    tasks: list[str] = option(help="task names", default_factory=lambda: ["a", "b"])
    progress: bool = option(True, help="show progress")
    seed: int | None = option(None, help="random seed", flag="--random-seed")
    internal: str = "not an option"

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ConfigError("steps must be at least 1")


def parser() -> argparse.ArgumentParser:
    built = argparse.ArgumentParser()
    add_arguments(built, Config)
    return built


def test_options_parse_by_annotation_and_leave_unset_ones_at_the_config_default():
    args = parser().parse_args(["--steps", "5", "--tasks", "x, y", "--no-progress", "--random-seed", "7"])
    assert from_arguments(Config, args) == Config(steps=5, tasks=["x", "y"], progress=False, seed=7)
    assert from_arguments(Config, parser().parse_args([])) == Config()
    assert given(Config, parser().parse_args(["--lr", "0.1"])) == {"lr": 0.1}


def test_help_is_written_once_with_the_default_and_fields_without_help_stay_out():
    text = parser().format_help()
    assert "optimizer steps (default: 100)" in text and "(default: a,b)" in text
    assert "--internal" not in text


def test_the_config_validates_what_the_options_built():
    with pytest.raises(ConfigError, match="at least 1"):
        from_arguments(Config, parser().parse_args(["--steps", "0"]))
    base = Config(lr=0.5)
    assert from_arguments(Config, parser().parse_args(["--steps", "2"]), base) == Config(steps=2, lr=0.5)
