"""Bad inputs and settings given to ``python -m core.embed``: a one-line error, exit 2, nothing written."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

import numpy as np

from tests.reliability.cases import Case, cases

SENTENCES = ["The red dog runs in the garden.", "A cat sleeps.", "The old man reads a book near the river."]
TEXT_FILE = ("texts.txt", "\n".join(SENTENCES) + "\n")


def write_input(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    if name.endswith(".parquet"):
        import pandas as pd

        pd.DataFrame({"sentence": SENTENCES}).to_parquet(path)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def assert_nothing_written(output: Path) -> None:
    leftovers = sorted(p.name for p in output.parent.iterdir()) if output.parent.exists() else []
    assert leftovers == [], f"files left in {output.parent}: {leftovers}"


def assert_one_line_error(stderr: str, pattern: str) -> None:
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith(("error:", "usage:", "python -m core.embed:"))]
    assert errors, stderr
    assert re.search(pattern, stderr), f"{pattern!r} not in:\n{stderr}"


def refused(id: str, given: str, sees: str, pattern: str, *, file=TEXT_FILE, args=(), area="input") -> Case:
    kept = "nothing: no output file, no temporary file"
    return Case(id, given, sees, kept, area, {"file": file, "args": tuple(args), "pattern": pattern})


RANDOM_BYTES = bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8))


@cases(
    refused(
        "empty-txt",
        "an empty .txt file",
        "`error: ... has no non-empty lines`",
        "has no non-empty lines",
        file=("empty.txt", ""),
    ),
    refused(
        "blank-txt",
        "a .txt file of whitespace-only lines",
        "`error: ... has no non-empty lines`",
        "has no non-empty lines",
        file=("blank.txt", "  \n\t\n \n"),
    ),
    refused("empty-csv", "an empty .csv file", "`error: ... is empty`", "is empty", file=("empty.csv", "")),
    refused(
        "latin1-txt",
        "a Latin-1 (non-UTF-8) .txt file",
        "`error: ... is not UTF-8 (byte 0xe9 at offset N); re-save it as UTF-8`",
        r"not UTF-8 \(byte 0xe9 at offset 3\)",
        file=("latin1.txt", "café au lait\n".encode("latin-1")),
    ),
    refused(
        "latin1-csv",
        "a Latin-1 (non-UTF-8) .csv file",
        "`error: ... is not UTF-8 (byte 0xe9 at offset N); re-save it as UTF-8`",
        r"not UTF-8 \(byte 0xe9 at offset 8\)",
        file=("latin1.csv", "text\ncaf\xe9\n".encode("latin-1")),
    ),
    refused(
        "binary-txt",
        "a binary file named .txt",
        "`error: ... is not UTF-8 (byte 0x.. at offset N)`",
        r"not UTF-8 \(byte 0x[0-9a-f]{2} at offset \d+\)",
        file=("random.txt", RANDOM_BYTES),
    ),
    refused(
        "binary-jsonl",
        "a binary file named .jsonl",
        "`error: ... is not UTF-8 (byte 0x.. at offset N)`",
        r"not UTF-8 \(byte 0x",
        file=("random.jsonl", RANDOM_BYTES),
    ),
    refused(
        "unknown-type",
        "a .docx file",
        "`error: unsupported file type '.docx' ...; use one of .csv, .tsv, .jsonl, .json, .parquet`",
        r"unsupported file type '\.docx'.*use one of",
        file=("report.docx", b"PK\x03\x04"),
    ),
    refused(
        "missing-input",
        "an --input path that does not exist",
        "`error: Input file ... does not exist.`",
        r"does not exist",
        file=("absent.txt", None),
    ),
    refused(
        "csv-no-column",
        "a .csv without the text column",
        "`error: ... has no column 'text'; its columns are: sentence, topic. Name the right one: --text-column NAME`",
        r"has no column 'text'; its columns are: sentence, topic\..*--text-column NAME",
        file=("data.csv", "sentence,topic\nhello,a\n"),
    ),
    refused(
        "jsonl-no-column",
        "a .jsonl without the text column",
        "`error: ... has no column 'text'; its columns are: sentence ... --text-column NAME ...`",
        r"has no column 'text'; its columns are: sentence\..*--text-column NAME",
        file=("data.jsonl", '{"sentence": "hello"}\n'),
    ),
    refused(
        "parquet-no-column",
        "a .parquet without the text column",
        "`error: ... has no column 'text'; its columns are: sentence ... --text-column NAME ...`",
        r"has no column 'text'; its columns are: sentence\..*--text-column NAME",
        file=("data.parquet", ""),
    ),
    refused(
        "jsonl-broken-line",
        "a .jsonl whose line 3 is broken",
        "`error: ..., line 3: not valid JSON (...)`",
        r"data\.jsonl, line 3: not valid JSON",
        file=("data.jsonl", '{"text": "one"}\n{"text": "two"}\n{"text": "thr\n{"text": "four"}\n'),
    ),
    refused(
        "unknown-model",
        "`--model no-such-model`",
        "`error: Unknown model 'no-such-model': not a packaged model (smollm2-135m, ...), not an existing folder, "
        "and not a hub id ...`",
        r"Unknown model 'no-such-model': not a packaged model \(smollm2-135m",
        args=("--model", "no-such-model"),
    ),
    refused(
        "unknown-prompt",
        "`--prompt nonsense` (neither a prompt name nor a template)",
        "`error: Unknown prompt 'nonsense': not a registered name (none, eol, ...) and, as a template, it lacks "
        "the {text} placeholder. Example: ...`",
        r"Unknown prompt 'nonsense': not a registered name .* lacks the \{text\} placeholder",
        args=("--prompt", "nonsense"),
    ),
    refused(
        "template-no-text",
        "`--prompt 'Summarize: this'` (a template without {text})",
        "the same `error: Unknown prompt ...: ... lacks the {text} placeholder. Example: ...`",
        r"Unknown prompt 'Summarize: this'.*lacks the \{text\} placeholder",
        args=("--prompt", "Summarize: this"),
    ),
    refused(
        "template-two-texts",
        "`--prompt '{text} and {text}'`",
        "`error: Prompt template ... has 2 {text} placeholders; use exactly one.`",
        r"has 2 \{text\} placeholders; use exactly one",
        args=("--prompt", "{text} and {text}"),
    ),
    refused(
        "unknown-pooling",
        "`--pooling median`",
        "`usage: ...` then `invalid choice: 'median' (choose from ...)`",
        r"invalid choice: 'median'",
        args=("--pooling", "median"),
    ),
    refused(
        "layer-out-of-range",
        "`--layer 99` on a 3-layer model",
        "`error: Layer 99 is out of range: this model has 3 layers, so use 0..3 (0 = embeddings) or -4..-1.`",
        r"Layer 99 is out of range: this model has 3 layers, so use 0\.\.3",
        args=("--layer", "99"),
    ),
    refused(
        "bad-layer",
        "`--layer top`",
        "`error: Bad layer 'top': use an index such as -1, 0 or 12, or 'lastK'`",
        r"Bad layer 'top'",
        args=("--layer", "top"),
    ),
    refused(
        "missing-adapter",
        "`--adapter` naming a folder that does not exist",
        "`error: No adapter folder no-such-adapter. Train one with: python -m core.train ...`",
        r"No adapter folder no-such-adapter\. Train one with: python -m core\.train",
        args=("--adapter", "no-such-adapter"),
    ),
)
def test_refused_with_a_clear_error(embed, tmp_path, case):
    name, content = case.data["file"]
    input = tmp_path / name if content is None else write_input(tmp_path, name, content)
    outcome = embed(*case.data["args"], input=input)
    assert outcome.code == 2, outcome.stderr
    assert_one_line_error(outcome.stderr, case.data["pattern"])
    assert_nothing_written(outcome.output)


@cases(
    Case(
        "output-read-only",
        "`--output` into a read-only folder",
        "`error: cannot write --output ...: the folder ... cannot be created or written (Permission denied); "
        "choose a writable folder ...`, before the model loads",
        "nothing",
        data={"where": "read-only"},
    ),
    Case(
        "output-under-a-file",
        "`--output` whose folder would have to be made inside a file",
        "`error: cannot write --output ...: the folder ... cannot be created or written (Not a directory) ...`",
        "nothing",
        data={"where": "under-file"},
    ),
    Case(
        "output-is-a-folder",
        "`--output` naming an existing folder `x.npy/`",
        "`error: --output ... is a folder; name a .npy file inside it`",
        "nothing",
        data={"where": "folder"},
    ),
)
def test_an_unwritable_output_is_refused_before_the_work(embed, tmp_path, case):
    input = write_input(tmp_path, *TEXT_FILE)
    where = case.data["where"]
    if where == "read-only":
        folder = tmp_path / "locked"
        folder.mkdir()
        folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
        output = folder / "vectors.npy"
        try:
            outcome = embed(input=input, output=output, as_user=True)
        finally:
            folder.chmod(0o755)
        pattern = r"cannot write --output .*locked.*Permission denied.*choose a writable folder"
    elif where == "under-file":
        (tmp_path / "plain").write_text("a file")
        output = tmp_path / "plain" / "sub" / "vectors.npy"
        outcome = embed(input=input, output=output)
        pattern = r"cannot write --output .*Not a directory"
    else:
        output = tmp_path / "out" / "x.npy"
        output.mkdir(parents=True)
        outcome = embed(input=input, output=output)
        pattern = r"--output .*x\.npy is a folder; name a \.npy file inside it"
    assert outcome.code == 2, outcome.stderr
    assert_one_line_error(outcome.stderr, pattern)
    assert "embedding" not in outcome.stderr  # refused before any text was embedded
    assert not output.is_file()


@cases(
    Case(
        "whitespace-lines",
        "a .txt with blank and whitespace-only lines between texts",
        "`wrote ... (3, 32)`: blank lines skipped",
        "one vector per non-blank line; the sidecar JSON says `texts: 3`",
        data={"file": ("gaps.txt", "\n  \nThe red dog runs.\n\t\nA cat sleeps.\n   \nThe old man reads.\n\n")},
    ),
    Case(
        "output-missing-folder",
        "`--output` into a folder that does not exist yet",
        "`wrote ...`: the folder is created",
        "the .npy and its sidecar JSON in the new folder",
        data={"file": TEXT_FILE, "output": "new/deeper/vectors.npy"},
    ),
)
def test_accepted(embed, tmp_path, case):
    input = write_input(tmp_path, *case.data["file"])
    output = tmp_path / case.data.get("output", "out/vectors.npy")
    outcome = embed(input=input, output=output)
    assert outcome.code == 0, outcome.stderr
    assert "wrote" in outcome.stdout and "Traceback" not in outcome.stderr
    assert np.load(output).shape == (3, 32)
    assert json.loads(output.with_suffix(".json").read_text())["texts"] == 3


@cases(
    Case(
        "five-mb-text",
        "a 5 MB single-line text",
        "a warning `1 of 1 texts exceeded max_length=512 tokens and were truncated`; `wrote ... (1, 32)`",
        "the vector of its first 512 tokens; the sidecar JSON says `truncated: 1`",
    )
)
def test_a_huge_text_is_truncated_and_counted(embed, tmp_path, case):
    sentence = "The red dog runs quickly in the garden near the old house. "
    input = write_input(tmp_path, "huge.txt", sentence * (5_000_000 // len(sentence)) + "\n")
    assert input.stat().st_size > 4_900_000
    outcome = embed(input=input)
    assert outcome.code == 0, outcome.stderr
    assert "1 of 1 texts exceeded max_length=512 tokens" in outcome.stderr
    assert np.load(outcome.output).shape == (1, 32)
    assert json.loads(outcome.output.with_suffix(".json").read_text())["truncated"] == 1
