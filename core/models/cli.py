"""``python -m core.models``: prepare (convert) packaged models, list them, upgrade adapters."""

from __future__ import annotations

from core.models.registry import DEFAULT_MODEL, PACKAGED, resolve_model_path, upgrade_adapter

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """``python -m core.models prepare NAME...``: convert packaged weights now; ``list``: show them;
    ``upgrade ADAPTER...``: re-save adapters in the backbone format (see ``upgrade_adapter``)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m core.models", description=main.__doc__)
    parser.add_argument("command", choices=["prepare", "list", "upgrade"])
    parser.add_argument("names", nargs="*", help="models to prepare (default: the default model); adapters to upgrade")
    args = parser.parse_args(argv)
    if args.command == "list":
        for name, packaged in PACKAGED.items():
            print(f"{name:14s} {packaged.description}")
        return 0
    if args.command == "upgrade":
        if not args.names:
            parser.error("upgrade needs adapter folders")
        for folder in args.names:
            done = upgrade_adapter(folder)
            print(f"{folder}: {'re-saved in the backbone format' if done else 'already in the backbone format'}")
        return 0
    for name in args.names or [DEFAULT_MODEL]:
        print(f"{name}: {resolve_model_path(name)}")
    return 0
