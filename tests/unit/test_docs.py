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
INLINE_CODE = re.compile(r"`[^`]+`")  # may wrap across lines, as Markdown allows
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)
# A command a page shows: `python -m module` (also `.venv/bin/python -m ...`); the module name ends at a space,
# a backtick or the end of a sentence.
COMMAND = re.compile(r"python3?\s+-m\s+([A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)*)")
# A project name in inline code: `core.encoding.setting.EmbeddingSetting`, `analysis.sides.embed_sides`, ...
DOTTED = re.compile(r"\b((?:core|analysis|workbench|pages|tests)(?:\.[A-Za-z_]\w*)+)")


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


def dotted_names(paths: list[Path]) -> list[str]:
    """Each dotted project name (``core.x.y``) the pages show in inline code, once, sorted."""
    found = set()
    for path in paths:
        for code in INLINE_CODE.findall(FENCE.sub("", path.read_text(encoding="utf-8"))):
            found.update(DOTTED.findall(code))
    return sorted(found)


def defines(name: str) -> str:
    """A pattern for a module that defines or exports ``name``: def, class, assignment, import, lazy-export key."""
    n = re.escape(name)
    forms = [
        rf"^\s*(?:def|class)\s+{n}\b",  # def name / class name
        rf"^\s*{n}\s*[:=]",  # name = ..., name: type = ...
        rf"^\s*(?:from|import)\s[^\n]*\b{n}\b",  # an import naming it on one line
        rf"^\s+{n},?\s*$",  # a line of a parenthesised import list
        rf"[\"']{n}[\"']\s*:",  # a key of a lazy-export map ("Encoder": "core.encoding.encoder")
    ]
    return "|".join(forms)


def missing_name(name: str, root: Path = REPO_ROOT) -> str | None:
    """Why ``name`` names nothing in the checkout, or None: the longest module prefix must be a file, the next part
    a name in that module's source, and a part after it a ``def`` there (a method)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        base = root.joinpath(*parts[:end])
        module = next((f for f in (base.with_suffix(".py"), base / "__init__.py") if f.exists()), None)
        if module is None:
            continue
        rest, source = parts[end:], module.read_text(encoding="utf-8")
        if rest and not re.search(defines(rest[0]), source, re.M):
            return f"{name}: no {rest[0]} in {module.relative_to(root)}"
        if len(rest) > 1 and not re.search(rf"\bdef {re.escape(rest[1])}\b", source):
            return f"{name}: no def {rest[1]} in {module.relative_to(root)}"
        return None
    return f"{name}: no such module"


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


def test_the_name_checker_tells_a_moved_module_from_a_present_one(tmp_path):
    (tmp_path / "core" / "encoding").mkdir(parents=True)
    (tmp_path / "core" / "__init__.py").write_text('"""Owns core.encoding.encoder."""\n', encoding="utf-8")
    (tmp_path / "core" / "encoding" / "__init__.py").write_text("", encoding="utf-8")
    (tmp_path / "core" / "encoding" / "encoder.py").write_text(
        "class Encoder:\n    def encode(self): ...\n", encoding="utf-8"
    )
    assert missing_name("core.encoding.encoder.Encoder.encode", tmp_path) is None
    assert missing_name("core.encoder", tmp_path) == "core.encoder: no encoder in core/__init__.py"
    assert missing_name("core.encoding.encoder.Decoder", tmp_path) == (
        "core.encoding.encoder.Decoder: no Decoder in core/encoding/encoder.py"
    )
    assert missing_name("core.encoding.encoder.Encoder.decode", tmp_path) == (
        "core.encoding.encoder.Encoder.decode: no def decode in core/encoding/encoder.py"
    )
    assert missing_name("analysis.attention", tmp_path) == "analysis.attention: no such module"


def test_every_project_name_the_docs_show_exists():
    names = dotted_names(doc_pages())
    assert len(names) > 20
    problems = [problem for name in names if (problem := missing_name(name))]
    assert not problems, "names the docs show that the code lacks:\n" + "\n".join(problems)


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
