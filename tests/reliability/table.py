"""The reliability table, generated from the cases the tests check.

``python -m tests.reliability.table`` prints it as Markdown; ``--write`` puts it into README.md
between the reliability markers (a test fails while the README's copy is stale).
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from tests.reliability.cases import Case

HERE = Path(__file__).parent
README = HERE.parents[1] / "README.md"
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
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    rows = [
        "| | Given | The user sees | What is kept |",
        "|---|---|---|---|",
        *(
            f"| {AREAS[case.area]} | {cell(case.given)} | {cell(case.sees)} | {cell(case.kept)} |"
            for case in all_cases()
        ),
    ]
    return "\n".join(rows) + "\n"


def readme_block() -> str:
    text = README.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise SystemExit(f"README.md has no {START} ... {END} markers")
    return text[text.index(START) + len(START) : text.index(END)].strip("\n") + "\n"


def write_readme() -> None:
    text = README.read_text(encoding="utf-8")
    before, after = text[: text.index(START) + len(START)], text[text.index(END) :]
    README.write_text(f"{before}\n{markdown()}{after}", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.table", description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="update README.md's copy")
    if parser.parse_args().write:
        write_readme()
        print(f"README.md: {len(all_cases())} cases")
    else:
        print(markdown(), end="")


if __name__ == "__main__":
    main()
