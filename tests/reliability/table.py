"""The reliability table, generated from the cases the tests check.

``python -m tests.reliability.table`` prints it as Markdown, one table per area; ``--write`` puts it into
docs/reliability.md between the reliability markers (a test fails while that copy is stale).
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from core.runtime.files import atomic_write
from tests.reliability.cases import Case

__all__ = ["DOCS", "END", "START", "all_cases", "docs_block", "markdown", "write_docs"]

HERE = Path(__file__).parent
DOCS = HERE.parents[1] / "docs" / "reliability.md"
START, END = "<!-- reliability-table:start -->", "<!-- reliability-table:end -->"
AREAS = {
    "security": "Security",
    "storage": "Storage",
    "concurrency": "Concurrency",
    "interrupt": "Interruption",
    "input": "Input",
}


def all_cases() -> list[Case]:
    """The cases of every test module here, in file and definition order, grouped by area."""
    found: list[Case] = []
    for path in sorted(HERE.glob("test_*.py")):
        module = importlib.import_module(f"tests.reliability.{path.stem}")
        for test in vars(module).values():
            for mark in getattr(test, "pytestmark", []):
                if mark.name == "parametrize" and mark.args[0] == "case":
                    found.extend(mark.args[1])
    return sorted(found, key=lambda case: list(AREAS).index(case.area))


def markdown() -> str:
    """The table as Markdown: a level-3 heading and a three-column table for each area that has cases."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    cases = all_cases()
    blocks = []
    for area, title in AREAS.items():
        rows = [case for case in cases if case.area == area]
        if not rows:
            continue
        lines = [
            f"### {title} ({len(rows)} cases)",
            "",
            "| Given | The user sees | What is kept |",
            "|---|---|---|",
            *(f"| {cell(case.given)} | {cell(case.sees)} | {cell(case.kept)} |" for case in rows),
        ]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def docs_block(path: Path = DOCS) -> str:
    """The table as it stands between the markers of ``path`` (docs/reliability.md).

    Raises:
        SystemExit: ``path`` lacks either marker.
    """
    text = path.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise SystemExit(f"{path} has no {START} ... {END} markers")
    return text[text.index(START) + len(START) : text.index(END)].strip("\n") + "\n"


def write_docs(path: Path = DOCS) -> None:
    """Replace what stands between the markers of ``path`` with :func:`markdown`; the rest is kept."""
    docs_block(path)  # refuses a file without the markers before anything is written
    text = path.read_text(encoding="utf-8")
    before, after = text[: text.index(START) + len(START)], text[text.index(END) :]
    with atomic_write(path) as handle:
        handle.write(f"{before}\n{markdown()}{after}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.table", description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="update the copy in docs/reliability.md")
    if parser.parse_args().write:
        write_docs()
        print(f"{DOCS.relative_to(HERE.parents[1])}: {len(all_cases())} cases")
    else:
        print(markdown(), end="")


if __name__ == "__main__":
    main()
