"""Command-line options from a config dataclass: one place for each option's help text.

A config field becomes an option when its ``metadata`` carries ``help`` (build it with :func:`option`). The option
is ``--field-name`` (underscores become dashes), its type comes from the annotation (``int``, ``float``, ``str``,
``bool`` as ``--x/--no-x``, ``list[str]`` as a comma-separated value, ``X | None`` as ``X``), and its argparse default
is ``None``, so :func:`from_arguments` can tell a value the user gave from one left at the config's default.

    @dataclass(frozen=True)
    class ReportConfig:
        out: str = option("results/report", help="folder the report is written to")

    parser = argparse.ArgumentParser()
    add_arguments(parser, ReportConfig)
    config = from_arguments(ReportConfig, parser.parse_args())
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

__all__ = ["add_arguments", "from_arguments", "given", "option"]

T = TypeVar("T")
_MISSING = dataclasses.MISSING


def option(
    default: Any = _MISSING,
    *,
    help: str,
    default_factory: Any = _MISSING,
    flag: str | None = None,
    choices: Iterable[str] | None = None,
    metavar: str | None = None,
) -> Any:
    """A dataclass ``field`` that is also a command-line option.

    Args:
        default / default_factory: as for ``dataclasses.field``.
        help: the option's help, written once here; the config's default is appended to it.
        flag: the option's name when it is not ``--field-name`` (e.g. ``--n`` for ``n_texts``).
        choices / metavar: as for argparse.
    """
    metadata = {"help": help, "flag": flag, "choices": tuple(choices) if choices is not None else None}
    metadata["metavar"] = metavar
    if default_factory is not _MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _option_type(annotation: Any) -> tuple[type, bool]:
    """(scalar type, is_list) of a field annotation; ``X | None`` counts as ``X``."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return _option_type(members[0]) if len(members) == 1 else (str, False)
    if origin in (list, tuple):
        return (typing.get_args(annotation) or (str,))[0], True
    if origin is typing.Literal:
        return str, False
    # Other types (LayerChoice, ...) parse from the string in the config's own __post_init__.
    return (annotation, False) if annotation in (int, float, str, bool) else (str, False)


def _comma_list(kind: type):
    def parse(text: str) -> list[Any]:
        return [kind(part.strip()) for part in text.split(",") if part.strip()]

    return parse


def _default_text(field: dataclasses.Field) -> str:
    if field.default is not _MISSING:
        value = field.default
    elif field.default_factory is not _MISSING:
        value = field.default_factory()
    else:
        return ""
    if isinstance(value, bool):
        return ""  # --x / --no-x already say it
    if isinstance(value, (list, tuple)):
        value = ",".join(map(str, value))
    return f" (default: {value})" if value is not None and value != "" else ""


def add_arguments(parser: argparse.ArgumentParser, config: type, *, exclude: Iterable[str] = ()) -> None:
    """Add an option to ``parser`` for every field of ``config`` built with :func:`option`, in field order.

    Fields without ``help`` metadata, and those named in ``exclude``, are left out.
    """
    hints = typing.get_type_hints(config)
    skip = set(exclude)
    for field in dataclasses.fields(config):
        meta = field.metadata
        if "help" not in meta or field.name in skip:
            continue
        flag = meta.get("flag") or "--" + field.name.replace("_", "-")
        kind, is_list = _option_type(hints[field.name])
        kwargs: dict[str, Any] = {"dest": field.name, "default": None, "help": meta["help"] + _default_text(field)}
        if kind is bool and not is_list:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = _comma_list(kind) if is_list else kind
            if meta.get("choices") and not is_list:
                kwargs["choices"] = meta["choices"]
            if meta.get("metavar"):
                kwargs["metavar"] = meta["metavar"]
        parser.add_argument(flag, **kwargs)


def given(config: type, namespace: argparse.Namespace | Mapping[str, Any]) -> dict[str, Any]:
    """The options of ``config`` the user gave (not ``None``) in ``namespace``, by field name."""
    values = vars(namespace) if isinstance(namespace, argparse.Namespace) else dict(namespace)
    names = {field.name for field in dataclasses.fields(config)}
    return {name: value for name, value in values.items() if name in names and value is not None}


def from_arguments(
    config: type[T], namespace: argparse.Namespace | Mapping[str, Any], base: T | None = None, **extra: Any
) -> T:
    """``config`` built from the options the user gave, over ``base`` (or the defaults), plus ``extra``.

    The config's own ``__post_init__`` validates the result, so a bad value fails the same way from every entry point.
    """
    values = {**given(config, namespace), **extra}
    return dataclasses.replace(base, **values) if base is not None else config(**values)
