"""Interrupted model conversion, clustering grid, attention report and faithfulness report; damaged grid cells.

Each interruption case signals a forked CLI run in the middle of its work (SIGINT as Ctrl-C, SIGKILL as a
crash), then runs the same command again: it must finish with the result of a run never interrupted, and
nothing half-written may be loaded on the way. The runs use the tiny Llama of tests/conftest.py; the reports
run without PNG export (``BROWSER_PATH`` points nowhere: HTML only), which the cases do not need.
"""

from __future__ import annotations

import functools
import json
import re
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.reliability.cases import Case, cases
from tests.reliability.children import PACKAGED_NAME, register_tiny_gguf, write_tiny_gguf
from tests.reliability.runner import Run, start_cli
from tests.reliability.test_storage import english_like_sentences

NO_PNG = {"BROWSER_PATH": "/nonexistent"}  # kaleido then fails at once: HTML figures only
SIGNALS = {"SIGINT": signal.SIGINT, "SIGKILL": signal.SIGKILL}


@pytest.fixture(scope="module")
def task_file(tmp_path_factory) -> Path:
    """A labelled CSV of 200 short texts in 4 labels: a grid task, and the reports' texts."""
    path = tmp_path_factory.mktemp("task") / "task.csv"
    rows = [f'"{text}",l{i % 4}' for i, text in enumerate(english_like_sentences(200, seed=21))]
    path.write_text("text,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def finished(module: str, args: list[Any], folder: Path, env: dict[str, str] | None = None, setup=None) -> Run:
    """A run of ``python -m MODULE ARGS`` to its end, with its own cache root under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    home = folder / "home"
    home.mkdir(exist_ok=True)
    run = start_cli(module, args, folder, {"EMBEDDING_LENS_HOME": str(home), **(env or {})}, setup=setup)
    code = run.wait(timeout=300)
    assert code == 0, run.stderr
    return run


def interrupt(run: Run, sig: int, mid_run: Callable[[], bool], what: str) -> int:
    """Signal ``run`` once ``mid_run()`` holds (the work under way, not done), then its exit code."""
    run.wait_until(mid_run, what, timeout=300, poll=0.005)
    code = run.interrupt(sig)
    if sig == signal.SIGINT:
        assert code == 130, run.stderr
        assert "interrupted: nothing half-written was kept" in run.stderr and "Traceback" not in run.stderr
    else:
        assert code == -signal.SIGKILL
    return code


def interruption(id: str, given: str, sees: str, kept: str, sig: str) -> Case:
    return Case(f"{id}-{sig.lower()}", f"{sig} to {given}", sees, kept, "interrupt", {"signal": SIGNALS[sig]})


SIGINT_SEES = "`interrupted: nothing half-written was kept; the same command resumes.`, exit 130"
SIGKILL_SEES = "the shell's `Killed` (exit 137)"


# ----- model conversion


@pytest.fixture(scope="module")
def gguf_root(tiny_model_dir, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("packages")
    write_tiny_gguf(tiny_model_dir, root)
    return root


@pytest.fixture(scope="module")
def converted_reference(gguf_root, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("convert-reference")
    finished(
        "core.models", ["prepare", PACKAGED_NAME], folder, setup=functools.partial(register_tiny_gguf, str(gguf_root))
    )
    return folder / "home" / "models" / PACKAGED_NAME


def conversion(sig: str, sees: str, kept: str) -> Case:
    given = "`python -m core.models prepare NAME` while it converts a packaged GGUF, then the same command"
    return interruption("convert", given, sees, kept, sig)


@cases(
    conversion(
        "SIGINT",
        f"{SIGINT_SEES}; the rerun converts and prints the folder",
        "no converted folder and no staging folder after the interrupt; then the folder an uninterrupted conversion "
        "makes (same weights and marker)",
    ),
    conversion(
        "SIGKILL",
        f"{SIGKILL_SEES}; the rerun warns `removing ... left by a conversion that was killed` and converts",
        "no converted folder after the kill (its staging folder is never loaded); the rerun deletes the staging "
        "folder and makes the folder an uninterrupted conversion makes",
    ),
)
def test_an_interrupted_conversion_is_redone_from_scratch(cli, home, gguf_root, converted_reference, case):
    setup = functools.partial(register_tiny_gguf, str(gguf_root))
    models = home / "models"
    target = models / PACKAGED_NAME
    run = cli("core.models", "prepare", PACKAGED_NAME, setup=setup)
    interrupt(run, case.data["signal"], lambda: any(models.glob(f".{PACKAGED_NAME}.*")), "the staging folder")
    assert not target.exists()  # a half-made conversion never has the folder's name
    staging = sorted(p.name for p in models.glob(f".{PACKAGED_NAME}.*"))
    if case.data["signal"] == signal.SIGINT:
        assert staging == []
    again = cli("core.models", "prepare", PACKAGED_NAME, setup=setup)
    assert again.wait() == 0, again.stderr
    assert f"{PACKAGED_NAME}: {target}" in again.stdout
    if staging:
        assert "left by a conversion that was killed" in again.stderr
    assert sorted(p.name for p in models.iterdir()) == [PACKAGED_NAME]  # no staging folder left
    marker, reference = (
        json.loads((f / ".conversion-complete.json").read_text()) for f in (target, converted_reference)
    )
    assert marker["weights_sha256"] == reference["weights_sha256"]
    assert sorted(p.name for p in target.iterdir()) == sorted(p.name for p in converted_reference.iterdir())


# ----- the clustering grid

GRID_PROMPTS = "none,eol,cluster,summarize"


def grid_args(model: Path, task: Path, out: Path, prompts: str = GRID_PROMPTS) -> list[Any]:
    return [
        "--models", model, "--tasks", f"{task}:text:label", "--prompts", prompts, "--poolings", "mean",
        "--layers=-1", "--no-baseline", "--precision", "fp32", "--no-cache", "--quiet", "--kmeans-seeds", "0,1",
        "--out", out,
    ]  # fmt: skip


def cell_scores(out: Path) -> dict[str, Any]:
    return {p.name: json.loads(p.read_text())["scores"] for p in sorted((out / "cells").glob("*/*.json"))}


def counts(stdout: str) -> tuple[int, int]:
    found = re.search(r"cells: (\d+) computed, (\d+) already done", stdout)
    assert found, stdout
    return int(found.group(1)), int(found.group(2))


@pytest.fixture(scope="module")
def grid_reference(tiny_model_dir, task_file, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("grid-reference")
    finished("analysis.clustering", grid_args(tiny_model_dir, task_file, folder / "out"), folder, NO_PNG)
    return folder / "out"


def grid_interruption(sig: str, sees: str) -> Case:
    given = "`python -m analysis.clustering` after its first cells are written, then the same command"
    kept = (
        "every cell written before the signal (each a complete JSON); the rerun says `cells: N computed, M already "
        "done` and ends with the cells and summary of an uninterrupted run"
    )
    return interruption("grid", given, sees, kept, sig)


@cases(grid_interruption("SIGINT", SIGINT_SEES), grid_interruption("SIGKILL", SIGKILL_SEES))
def test_an_interrupted_grid_resumes(cli, tiny_model_dir, task_file, tmp_path, grid_reference, case):
    out = tmp_path / "grid"
    args = grid_args(tiny_model_dir, task_file, out)
    run = cli("analysis.clustering", *args, env=NO_PNG)
    interrupt(run, case.data["signal"], lambda: any(out.glob("cells/*/*.json")), "a first cell")
    kept = cell_scores(out)  # every cell on disk is a complete JSON
    assert len(kept) >= 1 and not (out / "summary.csv").exists()
    again = cli("analysis.clustering", *args, env=NO_PNG)
    assert again.wait() == 0, again.stderr
    computed, skipped = counts(again.stdout)
    assert skipped == len(kept) and computed + skipped == 4
    assert cell_scores(out) == cell_scores(grid_reference)
    assert (out / "summary.csv").read_text() == (grid_reference / "summary.csv").read_text()


def copy_grid(reference: Path, tmp_path: Path) -> Path:
    import shutil

    out = tmp_path / "grid"
    shutil.copytree(reference, out)
    return out


def cell_of(out: Path, prompt: str) -> Path:
    return next((out / "cells").glob(f"*/*__{prompt}__*.json"))


@cases(
    Case(
        "grid-cell-truncated",
        "a cell JSON in `OUT/cells` cut to half its length, then the grid's command again",
        "a warning `grid cell ... is damaged (not JSON (...)): recomputing it`; `cells: 1 computed, 3 already done`",
        "the cell recomputed (the scores of the original) and the summary of all four",
        "storage",
        {"damage": lambda data: data[: len(data) // 2]},
    ),
    Case(
        "grid-cell-not-json",
        "a cell JSON in `OUT/cells` overwritten with binary bytes, then the grid's command again",
        "a warning `grid cell ... is damaged (not UTF-8 text (byte N)): recomputing it`; "
        "`cells: 1 computed, 3 already done`",
        "the cell recomputed (the scores of the original) and the summary of all four",
        "storage",
        {"damage": lambda data: bytes(np.random.default_rng(4).integers(128, 256, 600, dtype=np.uint8))},
    ),
)
def test_a_damaged_cell_is_named_and_recomputed(cli, tiny_model_dir, task_file, tmp_path, grid_reference, case):
    out = copy_grid(grid_reference, tmp_path)
    cell = cell_of(out, "eol")
    cell.write_bytes(case.data["damage"](cell.read_bytes()))
    run = cli("analysis.clustering", *grid_args(tiny_model_dir, task_file, out), env=NO_PNG)
    assert run.wait() == 0, run.stderr
    assert re.search(rf"grid cell {re.escape(str(cell))} is damaged \(not (JSON|UTF-8)", run.stderr), run.stderr
    assert counts(run.stdout) == (1, 3) and "Traceback" not in run.stderr
    assert cell_scores(out) == cell_scores(grid_reference)
    assert (out / "summary.csv").read_text() == (grid_reference / "summary.csv").read_text()


@cases(
    Case(
        "grid-cell-damaged-elsewhere",
        "a damaged cell JSON of an earlier grid in `OUT`, and a grid run that does not include that cell",
        "a warning `left out of the summary: 1 damaged cell file(s) in OUT/cells: PATH (not JSON ...). Run the grid "
        "that made them again ...`",
        "a summary of the readable cells only: the damaged one is no row of it",
        "storage",
    )
)
def test_a_damaged_cell_of_another_run_stays_out_of_the_summary(
    cli, tiny_model_dir, task_file, tmp_path, grid_reference, case
):
    out = copy_grid(grid_reference, tmp_path)
    cell = cell_of(out, "summarize")
    cell.write_text(cell.read_text()[:200])
    run = cli("analysis.clustering", *grid_args(tiny_model_dir, task_file, out, prompts="none,eol,cluster"), env=NO_PNG)
    assert run.wait() == 0, run.stderr
    assert f"left out of the summary: 1 damaged cell file(s) in {out / 'cells'}: {cell} (not JSON" in run.stderr
    assert counts(run.stdout) == (0, 3)
    summary = (out / "summary.csv").read_text()
    assert "summarize" not in summary and "cluster" in summary


# ----- the attention report

ATTENTION_FILE = "attention_report.json"


def attention_args(model: Path, task: Path, out: Path) -> list[Any]:
    return [
        "--model", model, "--task", task, "--n", "24", "--bootstrap", "50", "--bench-n", "4", "--attribution-n", "2",
        "--ig-steps", "4", "--ig-max-steps", "8", "--out", out,
    ]  # fmt: skip


def without_timing(report: dict[str, Any]) -> dict[str, Any]:
    """The report less what measures the machine (speeds, seconds, memory)."""
    stable = {key: value for key, value in report.items() if key != "speed"}
    for side in (stable.get("attribution") or {}).values():
        side.pop("seconds", None)
    return stable


@pytest.fixture(scope="module")
def attention_reference(tiny_model_dir, task_file, tmp_path_factory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("attention-reference")
    finished("analysis.attention", attention_args(tiny_model_dir, task_file, folder / "out"), folder, NO_PNG)
    return json.loads((folder / "out" / ATTENTION_FILE).read_text())


def attention_interruption(sig: str, sees: str) -> Case:
    given = "`python -m analysis.attention` after its corpus capture, then the same command"
    kept = "no report and no figure after the signal; the rerun writes the report of an uninterrupted run"
    return interruption("attention", given, sees, kept, sig)


@cases(attention_interruption("SIGINT", SIGINT_SEES), attention_interruption("SIGKILL", SIGKILL_SEES))
def test_an_interrupted_attention_report_is_redone(cli, tiny_model_dir, task_file, tmp_path, attention_reference, case):
    out = tmp_path / "attention"
    args = attention_args(tiny_model_dir, task_file, out)
    run = cli("analysis.attention", *args, env=NO_PNG)
    interrupt(run, case.data["signal"], lambda: "capture speed" in run.stderr, "the capture's speed")
    assert not out.exists() or sorted(p.name for p in out.iterdir()) == []
    again = cli("analysis.attention", *args, env=NO_PNG)
    assert again.wait() == 0, again.stderr
    report = json.loads((out / ATTENTION_FILE).read_text())
    assert without_timing(report) == without_timing(attention_reference)
    assert not list(out.glob(".*.tmp"))


# ----- the faithfulness report

FAITHFULNESS_FILE = "report.json"


def faithfulness_args(model: Path, task: Path, out: Path) -> list[Any]:
    return [
        "--model", model, "--tasks", task, "--n", "40", "--k", "3", "--methods", "attention_last", "random",
        "gradient_x_input", "--random-seeds", "2", "--chunk", "8", "--bootstrap", "50", "--peak-layer", "1",
        "--no-png", "--out", out,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def faithfulness_reference(tiny_model_dir, task_file, tmp_path_factory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("faithfulness-reference")
    finished("analysis.faithfulness", faithfulness_args(tiny_model_dir, task_file, folder / "out"), folder)
    return json.loads((folder / "out" / FAITHFULNESS_FILE).read_text())


def faithfulness_interruption(sig: str, sees: str) -> Case:
    given = "`python -m analysis.faithfulness` after its first chunk of texts, then the same command"
    kept = (
        "the per-text records of every finished chunk (`records.jsonl`; a line cut short by a kill is ignored); the "
        "rerun says `... texts already measured ..., resuming` and writes the report of an uninterrupted run"
    )
    return interruption("faithfulness", given, sees, kept, sig)


@cases(faithfulness_interruption("SIGINT", SIGINT_SEES), faithfulness_interruption("SIGKILL", SIGKILL_SEES))
def test_an_interrupted_faithfulness_report_resumes(
    cli, tiny_model_dir, task_file, tmp_path, faithfulness_reference, case
):
    out = tmp_path / "faithfulness"
    args = faithfulness_args(tiny_model_dir, task_file, out)
    run = cli("analysis.faithfulness", *args)
    interrupt(run, case.data["signal"], lambda: "8/40 texts measured (base)" in run.stderr, "the first chunk")
    assert not (out / FAITHFULNESS_FILE).exists()
    again = cli("analysis.faithfulness", *args)
    assert again.wait() == 0, again.stderr
    assert re.search(r"(\d+) of 40 texts already measured in .*records\.jsonl, resuming", again.stderr)
    report = json.loads((out / FAITHFULNESS_FILE).read_text())
    assert {k: v for k, v in report.items() if k != "speed"} == {
        k: v for k, v in faithfulness_reference.items() if k != "speed"
    }
    records = []
    for line in (out / "records.jsonl").read_text().splitlines():
        try:
            records.append(json.loads(line)["key"])
        except ValueError:
            continue  # a line a kill cut short
    assert len(records) == len(set(records)) == 40  # every text measured once
