"""The README and docs/ stay true to the checkout: links resolve, shown commands exist, the README stays short."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest

from core.runtime.paths import REPO_ROOT

README_MAX_LINES = 250
FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)
# A command a page shows: `python -m module` (also `.venv/bin/python -m ...`); the module name ends at a space,
# a backtick or the end of a sentence.
COMMAND = re.compile(r"python3?\s+-m\s+([A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)*)")


def doc_pages(root: Path = REPO_ROOT) -> list[Path]:
    """README.md and every Markdown page of docs/, in a fixed order."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def prose(text: str) -> str:
    """``text`` without fenced code blocks and inline code, where a ``[x](y)`` is not a link."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: rendered text, lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading renders as its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = "".join(char for char in text if char.isalnum() or char in " -_")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of ``path``; a repeated heading gets ``-1``, ``-2``, ... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for match in HEADING.finditer(FENCE.sub("", path.read_text(encoding="utf-8"))):
        slug = github_slug(match.group(1))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def broken_links(path: Path) -> list[str]:
    """The relative links of ``path`` whose file, or whose ``#anchor`` in that file, does not exist."""
    problems = []
    for target in LINK.findall(prose(path.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto: ...: not checked offline
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / unquote(file_part)).resolve() if file_part else path
        if not linked.exists():
            problems.append(f"{path.name}: {target} (no such file)")
        elif anchor and linked.suffix == ".md" and unquote(anchor) not in anchors(linked):
            problems.append(f"{path.name}: {target} (no heading with that anchor in {linked.name})")
    return problems


def shown_modules(paths: list[Path]) -> list[str]:
    """Each module a ``python -m`` command in ``paths`` runs, once, in order of first appearance."""
    found: dict[str, None] = {}
    for path in paths:
        for module in COMMAND.findall(path.read_text(encoding="utf-8")):
            found[module] = None
    return list(found)


def test_the_slug_follows_github():
    assert github_slug("Base and adapter in one trunk") == "base-and-adapter-in-one-trunk"
    assert github_slug("1. Embed a text") == "1-embed-a-text"
    assert github_slug("The workbench's pages") == "the-workbenchs-pages"
    assert github_slug("Token prepending's layer range") == "token-prependings-layer-range"
    assert github_slug("Interruption (22 cases)") == "interruption-22-cases"
    assert github_slug("`core.embed` and [links](x.md)") == "coreembed-and-links"


def test_the_link_checker_finds_a_missing_file_and_a_missing_anchor(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## A section\n\n## A section\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n[ok](other.md#a-section) [ok too](other.md#a-section-1) [self](#page) [web](https://x.org/y)\n"
        "[gone](missing.md) [no anchor](other.md#nowhere) `[in code](missing.md)`\n\n"
        "```\n[in a fence](missing.md)\n```\n",
        encoding="utf-8",
    )
    assert broken_links(page) == [
        "page.md: missing.md (no such file)",
        "page.md: other.md#nowhere (no heading with that anchor in other.md)",
    ]


def test_shown_modules_are_read_from_prose_and_code(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "Run `python -m core.embed --help`.\n\n```bash\n.venv/bin/python -m core.pairs.guard x.jsonl\n"
        "python -m core.embed --input a\n```\nThen python -m analysis.clustering.\n",
        encoding="utf-8",
    )
    assert shown_modules([page]) == ["core.embed", "core.pairs.guard", "analysis.clustering"]


def test_the_readme_is_at_most_250_lines():
    lines = (REPO_ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail into docs/"


def test_the_docs_exist_and_every_relative_link_resolves():
    pages = doc_pages()
    assert len(pages) > 5 and all(page.exists() for page in pages)
    problems = [problem for page in pages for problem in broken_links(page)]
    assert not problems, "broken links:\n" + "\n".join(problems)


@pytest.mark.slow
@pytest.mark.parametrize("module", shown_modules(doc_pages()))
def test_every_shown_command_answers_help(module):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-m", module, "--help"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"python -m {module} --help exited {result.returncode}:\n{result.stderr[-2000:]}"
    assert "usage" in result.stdout.lower(), f"python -m {module} --help printed no usage:\n{result.stdout[-500:]}"
