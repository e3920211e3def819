"""Grid cells written as mteb results and read back with mteb's own reader, beside a published model's."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from analysis.clustering.mteb_results import cell_model_name, convert_results, main, write_cell
from core.runtime.errors import GridError, run_cli
from core.runtime.paths import REPO_ROOT

LOCAL_TRACK = REPO_ROOT / "results" / "local-track"
ADAPTER_CELL = next((LOCAL_TRACK / "cells" / "r8").glob("smollm2-135m-smollm2-135m-embed__eol__last__*.json"))


def test_one_cell_reads_back_with_mteb_beside_a_published_model(tmp_path):
    import mteb
    from mteb import ResultCache, TaskResult

    cell = json.loads(ADAPTER_CELL.read_text())
    path = write_cell(cell, tmp_path)
    assert (
        path
        == tmp_path / "results" / cell_model_name(cell).replace("/", "__") / cell["adapter_sha256"][:12] / "r8.json"
    )
    assert (path.parent / "model_meta.json").is_file()
    # A published model's result in the same cache (its metadata from mteb's registry, offline).
    published = mteb.get_model_meta("sentence-transformers/all-MiniLM-L6-v2")
    other = TaskResult.model_validate_json(path.read_text())
    ResultCache(tmp_path).save_to_cache(other, published)

    results = ResultCache(tmp_path).load_results(include_remote=False)
    by_name = {model.model_name: model for model in results.model_results}
    assert set(by_name) == {"embedding-lens/smollm2-135m+smollm2-135m-embed__eol-noquote__last__L-1", published.name}
    row = by_name[cell_model_name(cell)]
    assert row.model_revision == cell["adapter_sha256"][:12]
    [task] = row.task_results
    assert task.task_name == "r8"
    assert task.get_score() == pytest.approx(cell["scores"]["v_measure"], abs=1e-6)
    assert task.scores["test"][0]["ami"] == pytest.approx(cell["scores"]["ami"], abs=1e-6)


def test_whole_folder_converts_and_lists_every_row(tmp_path):
    from mteb import ResultCache

    paths = convert_results(LOCAL_TRACK, tmp_path)
    cells = sorted((LOCAL_TRACK / "cells").glob("*/*.json"))
    assert len(paths) == len(cells)
    results = ResultCache(tmp_path).load_results(include_remote=False)
    frame = results.to_dataframe()
    assert len(results.model_results) == len({cell_model_name(json.loads(p.read_text())) for p in cells})
    assert cell_model_name(json.loads(ADAPTER_CELL.read_text())) in frame.columns
    assert set(frame["task_name"]) == {p.parent.name for p in cells}


def test_cli_and_bad_folder(tmp_path, capsys):
    assert run_cli(main, [str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 2
    assert "no grid cells" in capsys.readouterr().err.lower()
    one = tmp_path / "grid" / "cells" / "r8"
    one.mkdir(parents=True)
    shutil.copy(ADAPTER_CELL, one)
    assert run_cli(main, [str(tmp_path / "grid"), "--out", str(tmp_path / "out")]) == 0
    assert "1 task results for 1 rows" in capsys.readouterr().out


def test_cell_without_v_measure_is_refused(tmp_path):
    cell = json.loads(ADAPTER_CELL.read_text())
    cell["scores"] = {}
    with pytest.raises(GridError, match="v_measure"):
        write_cell(cell, tmp_path)
    assert not any(Path(tmp_path).rglob("*.json"))
