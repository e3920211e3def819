"""Nothing lost, nothing overwritten (files a run did not write, inputs, a source folder, a second run on the same
output, texts that would silently misalign with labels), and a clear error where a traceback was (a grid --out
that is a file, an unwritable cache root or HOME, a damaged weight-hash memo, a damaged job record in the app)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat

import numpy as np

from tests.reliability.cases import Case, cases
from tests.reliability.runner import start_cli
from tests.reliability.test_analysis import NO_PNG, grid_args, task_file  # noqa: F401 - task_file is a fixture
from tests.reliability.test_inputs import SENTENCES, assert_one_line_error


def case(id: str, given: str, sees: str, kept: str, area: str = "storage", **data) -> Case:
    return Case(id, given, sees, kept, area, data)


# ----- files the run did not write


@cases(
    case(
        "embed-sidecar-input",
        "`core.embed --input d/texts.json --output d/texts.npy` (the settings file would be named like the input)",
        "`error: --output d/texts.npy would write its settings to d/texts.json, which is your --input; choose "
        "another --output name`, exit 2",
        "the input unchanged; no output",
        name="texts",
        pattern=r"would write its settings to .*texts\.json, which is your --input",
    ),
    case(
        "embed-sidecar-foreign",
        "`core.embed --output d/v.npy` beside an unrelated `d/v.json` of the user's",
        "`error: --output d/v.npy would write its settings to d/v.json, a file core.embed did not write; choose "
        "another --output name, or move that file.`, exit 2",
        "the user's v.json unchanged; no output",
        name="v",
        pattern=r"would write its settings to .*v\.json, a file core\.embed did not write",
    ),
)
def test_embed_never_overwrites_a_json_it_did_not_write(case, embed, tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    rows = "".join(json.dumps({"text": text}) + "\n" for text in SENTENCES)
    if case.data["name"] == "texts":
        source = folder / "texts.json"
        source.write_text(json.dumps([{"text": text} for text in SENTENCES]))
    else:
        source = folder / "in.jsonl"
        source.write_text(rows)
        (folder / "v.json").write_text('{"mine": true}\n')
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    outcome = embed(input=source, output=folder / f"{case.data['name']}.npy")
    assert outcome.code == 2, outcome.stderr
    assert_one_line_error(outcome.stderr, case.data["pattern"])
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


@cases(
    case(
        "embed-sidecar-own",
        "`core.embed` run twice with the same --output",
        "`wrote ...` both times",
        "the vectors and their settings file, rewritten by the second run (a file core.embed wrote itself)",
    ),
)
def test_embed_rewrites_its_own_settings_file(case, embed, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(SENTENCES) + "\n")
    for _ in range(2):
        outcome = embed(input=texts)
        assert outcome.code == 0, outcome.stderr
    assert json.loads(outcome.output.with_suffix(".json").read_text())["shape"] == [3, 32]


@cases(
    case(
        "export-source-out",
        "`core.export A --out A --force` (an adapter exported onto itself)",
        "`error: --out A is the folder you export (A): exporting there would replace or change it, --force or not. "
        "Choose an --out outside it ...`, exit 2",
        "the adapter folder unchanged",
        out="same",
    ),
    case(
        "export-out-holds-source",
        "`core.export runs/A --out runs --force` (an --out that holds the source)",
        "`error: --out runs contains the folder you export ...`, exit 2",
        "the folder and the adapter in it unchanged",
        out="parent",
    ),
)
def test_export_never_replaces_its_source(case, cli, tiny_adapter_dir, tmp_path):
    runs = tmp_path / "runs"
    source = runs / "A"
    shutil.copytree(tiny_adapter_dir, source)
    before = sorted((p.relative_to(runs), p.read_bytes()) for p in runs.rglob("*") if p.is_file())
    out = source if case.data["out"] == "same" else runs
    run = cli("core.export", source, "--out", out, "--force")
    assert run.wait() == 2, run.stderr
    relation = "is" if case.data["out"] == "same" else "contains"
    assert f"error: --out {out} {relation} the folder you export" in run.stderr and "Traceback" not in run.stderr
    assert sorted((p.relative_to(runs), p.read_bytes()) for p in runs.rglob("*") if p.is_file()) == before


@cases(
    case(
        "grid-task-collision",
        "a grid over `a/task.csv,b/task.csv` (two task files of the same name)",
        "`error: tasks a/task.csv:... and b/task.csv:... have the same name 'task' (results are filed by task name, "
        "so one would replace the other); rename one of the files.`, exit 2",
        "nothing: no cells, no summary",
        "input",
    ),
)
def test_two_tasks_of_one_name_are_refused(case, cli, tiny_model_dir, task_file, tmp_path):  # noqa: F811
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        shutil.copy(task_file, tmp_path / folder / "task.csv")
    args = grid_args(tiny_model_dir, tmp_path / "a" / "task.csv", tmp_path / "grid")
    at = args.index("--tasks") + 1
    args[at] = f"{tmp_path / 'a' / 'task.csv'}:text:label,{tmp_path / 'b' / 'task.csv'}:text:label"
    run = cli("analysis.clustering", *args, env=NO_PNG)
    assert run.wait() == 2, run.stderr
    assert re.search(r"error: tasks .*a/task\.csv\S* and .*b/task\.csv\S* have the same name 'task'", run.stderr)
    assert not any((tmp_path / "grid").rglob("*.json")) and not (tmp_path / "grid" / "summary.csv").exists()


# ----- texts that would misalign with the user's labels


SEPARATED = "a\u2028b\nc\x0cd\r\ne\x85f\ng\x1ch\ni\u2029j\nk\x0bl\n"


@cases(
    case(
        "txt-unicode-separators",
        "a .txt of 6 lines holding U+2028/U+2029, form feed, vertical tab, NEL and U+001C inside them",
        "`wrote ... (6, 32)`",
        "6 vectors, one per line (a line ends at \\n or \\r\\n only), aligned with the user's labels",
        "input",
    ),
)
def test_txt_lines_end_at_newline_only(case, embed, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_bytes(SEPARATED.encode("utf-8"))
    outcome = embed(input=texts)
    assert outcome.code == 0, outcome.stderr
    assert np.load(outcome.output).shape == (6, 32)


@cases(
    case(
        "parquet-list-cell",
        "a .parquet whose text column holds lists",
        "`error: ..., row 1, column 'text': the cell is a ndarray, not text (\"['a' 'b']\"); each cell of that "
        "column must be one string...`, exit 2",
        "nothing: no output, no temporary file",
        "input",
        kind="parquet",
        pattern=r"row 1, column 'text': the cell is a ndarray, not text",
    ),
    case(
        "jsonl-object-cell",
        "a .jsonl whose second row's text is an object",
        "`error: ..., row 2, column 'text': the cell is a dict, not text (\"{'a': 1}\")...`, exit 2",
        "nothing: no output, no temporary file",
        "input",
        kind="jsonl",
        pattern=r"row 2, column 'text': the cell is a dict, not text",
    ),
)
def test_a_cell_that_is_not_text_is_refused(case, embed, tmp_path):
    if case.data["kind"] == "parquet":
        import pandas as pd

        source = tmp_path / "lists.parquet"
        pd.DataFrame({"text": [["a", "b"], ["c"]]}).to_parquet(source)
    else:
        source = tmp_path / "rows.jsonl"
        source.write_text(json.dumps({"text": "fine"}) + "\n" + json.dumps({"text": {"a": 1}}) + "\n")
    outcome = embed(input=source)
    assert outcome.code == 2, outcome.stderr
    assert_one_line_error(outcome.stderr, case.data["pattern"])
    assert not outcome.output.parent.exists() or not any(outcome.output.parent.iterdir())


# ----- two runs, one output


@cases(
    case(
        "embed-same-output",
        "a second `core.embed` with the same --output while the first runs",
        "the second: `error: --output ... is being written by another core.embed run right now: wait for it to end "
        "(or stop it), or choose another --output.`, exit 2; the first finishes",
        "the first run's vectors, whole; its shards were never touched by the second",
        "concurrency",
    ),
)
def test_a_second_run_on_the_same_output_is_refused(case, start, tmp_path):
    texts = tmp_path / "many.txt"
    texts.write_text("".join(f"text number {i} about a red dog\n" for i in range(400)))
    output = tmp_path / "out" / "vectors.npy"
    first = start("--chunk-size", "20", input=texts, output=output)
    first.wait_for_stderr("embedding")  # past the lock: its progress bar is drawn
    os.kill(first.pid, signal.SIGSTOP)
    try:
        second = start("--chunk-size", "20", input=texts, output=output)
        assert second.wait() == 2, second.stderr
        assert "is being written by another core.embed run right now" in second.stderr, second.stderr
        assert "Traceback" not in second.stderr
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert first.wait() == 0, first.stderr
    assert np.load(output).shape == (400, 32)


# ----- a clear error instead of a traceback


@cases(
    case(
        "grid-out-file",
        "a grid `--out` that is a file",
        "`error: --out FILE is a file; name a folder (new or a grid's) instead.`, exit 2",
        "the file unchanged",
        where="file",
    ),
    case(
        "grid-out-under-file",
        "a grid `--out` under a file (`notes.txt/grid`)",
        "`error: --out notes.txt/grid lies under notes.txt, which is a file; name a folder ...`, exit 2",
        "the file unchanged",
        where="under",
    ),
)
def test_a_grid_out_that_is_a_file_is_named(case, cli, tiny_model_dir, task_file, tmp_path):  # noqa: F811
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    out = notes if case.data["where"] == "file" else notes / "grid"
    run = cli("analysis.clustering", *grid_args(tiny_model_dir, task_file, out), env=NO_PNG)
    assert run.wait() == 2, run.stderr
    expected = "is a file" if case.data["where"] == "file" else f"lies under {notes}, which is a file"
    assert f"error: --out {out} {expected}" in run.stderr and "Traceback" not in run.stderr
    assert notes.read_text() == "mine\n"


def unset_lens_home() -> None:
    """In a forked run: no EMBEDDING_LENS_HOME, so the cache root is under HOME."""
    os.environ.pop("EMBEDDING_LENS_HOME", None)


@cases(
    case(
        "readonly-cache-root",
        "`core.embed --no-cache` with a read-only cache root (EMBEDDING_LENS_HOME)",
        "`error: cannot write the cache folder ... (Permission denied); core.embed keeps its finished chunks there "
        "... set EMBEDDING_LENS_HOME to a writable folder.`, exit 2",
        "nothing: no output",
        where="root",
    ),
    case(
        "readonly-home",
        "`core.embed` with a read-only HOME and no EMBEDDING_LENS_HOME",
        "`error: cannot write the cache folder ~/.cache/embedding-lens (Permission denied) ... set "
        "EMBEDDING_LENS_HOME to a writable folder.`, exit 2",
        "nothing: no output",
        where="home",
    ),
)
def test_an_unwritable_cache_root_is_named(case, cli, tiny_model_dir, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(SENTENCES) + "\n")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    output = tmp_path / "out" / "vectors.npy"
    args = ["--model", tiny_model_dir, "--input", texts, "--output", output, "--no-cache"]
    if case.data["where"] == "root":
        run = cli("core.embed", *args, env={"EMBEDDING_LENS_HOME": str(locked)}, as_user=True)
    else:
        env = {"HOME": str(locked)}
        run = start_cli("core.embed", args, tmp_path, env, name="home", as_user=True, setup=unset_lens_home)
    try:
        assert run.wait() == 2, run.stderr
    finally:
        locked.chmod(0o755)
    assert "error: cannot write the cache folder" in run.stderr and "EMBEDDING_LENS_HOME" in run.stderr
    assert "Traceback" not in run.stderr and not output.exists()


@cases(
    case(
        "damaged-weight-hashes",
        "a damaged `weight-hashes.json` in the cache root (cut off mid-write)",
        "`... weight-hashes.json was damaged; set aside as weight-hashes.json.damaged-<time> and rebuilt`, then "
        "the run as usual",
        "the vectors; the damaged file set aside, a rebuilt memo in its place",
    ),
)
def test_a_damaged_weight_hash_memo_is_set_aside(case, embed, home, tmp_path):
    (home / "weight-hashes.json").write_text('{"/some/model": {"stamp": [["model.safet')
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(SENTENCES) + "\n")
    outcome = embed(input=texts)
    assert outcome.code == 0, outcome.stderr
    assert "weight-hashes.json was damaged; set aside as weight-hashes.json.damaged-" in outcome.stderr
    assert isinstance(json.loads((home / "weight-hashes.json").read_text()), dict)
    assert len(list(home.glob("weight-hashes.json.damaged-*"))) == 1


@cases(
    case(
        "damaged-job-record",
        "a damaged `job.json` (cut off) in a run under the cache's adapters folder",
        "Overview and every model page open; the Adapters page lists the run as `NAME: damaged` with `... job.json "
        "is damaged (...): the run's state is unknown; its files are kept as they are`",
        "the run's files as they were",
    ),
)
def test_a_damaged_job_record_is_a_damaged_run_in_the_app(case, tiny_model_dir):
    from streamlit.testing.v1 import AppTest

    from tests.app.test_app import APP
    from tests.conftest import PAGES_DIR
    from workbench.state import CUSTOM_MODEL, NO_ADAPTER, TRAINED_DIR

    run = TRAINED_DIR / "cut-off"
    (run / "checkpoints" / "step-000002").mkdir(parents=True)
    (run / "job.json").write_text('{"pid": 12, "sett')
    try:
        app = AppTest.from_file(APP, default_timeout=120)
        app.session_state["model_pick"] = CUSTOM_MODEL
        app.session_state["model_custom"] = str(tiny_model_dir)
        app.session_state["adapter_pick"] = NO_ADAPTER
        app.run()
        assert not app.exception, app.exception
        app.switch_page("../pages/embed.py").run()  # a model page: its sidebar lists stopped runs' checkpoints
        assert not app.exception, app.exception
        page = AppTest.from_file(str(PAGES_DIR / "adapters.py"), default_timeout=60).run()
        assert not page.exception, page.exception
        assert any(e.label == "cut-off: damaged" for e in page.expander)
        assert any(f"{run / 'job.json'} is damaged" in w.value for w in page.warning)
        assert (run / "job.json").read_text() == '{"pid": 12, "sett'
    finally:
        shutil.rmtree(run)
