"""The clustering grid's method dimension: plain keys unchanged, one group per non-plain method, method column."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from analysis.clustering import filter_rows, heatmap_frames, summary_tables, top_rows
from analysis.clustering.grid import BASELINE_MODEL
from analysis.clustering.store import cell_id, cell_key, cell_method
from analysis.clustering.summary import markdown_table
from core.encoding.methods import PLAIN, parse_method, stored_prompt_name
from core.encoding.prompts import PROMPTS
from tests.unit.clustering.test_clustering import cell_files, cli, main, synthetic_rows, write_csv
from tests.unit.clustering.test_clustering_summary import LOCAL_TRACK, cell


@pytest.fixture
def labelled_csv(tmp_path) -> Path:
    return write_csv(tmp_path / "topics.csv", synthetic_rows())


def _rebuilt_key(stored: dict, method_settings: dict) -> dict:
    from analysis.clustering.grid import TaskBudget

    identity = {name: stored[name] for name in ("model", "weights_sha256", "adapter_sha256")}
    return cell_key(
        identity,
        stored["prompt"],
        stored["pooling"],
        stored["layer"],
        -1,
        stored["precision"],
        stored["max_length"],
        SimpleNamespace(sha256=stored["dataset_sha256"]),  # cell_key reads only its hash
        TaskBudget(stored["subsample_size"], stored["max_length"]),
        stored["kmeans_seeds"],
        stored["normalize"],
        method_settings,
    )


def current_method(stored: dict) -> str:
    """A stored cell's method by today's names: a MetaEOL cell made with the short prompts is ``metaeol-short``."""
    spec = cell_method(stored)
    return stored_prompt_name(stored["prompt"]) if spec == "metaeol" else spec


def current_prompt(stored: dict) -> str | None:
    """A stored cell's prompt by today's names (a quote-less PromptEOL cell is ``eol-noquote``); None for a method's
    own template that is today's default one."""
    name = stored_prompt_name(stored["prompt"])
    return None if name == stored["prompt"]["name"] else name


def test_every_committed_cell_keys_as_its_method_and_plain_keys_are_unchanged():
    """The method setting adds nothing to a plain cell's key, so no committed cell is recomputed; a method cell's
    key is its method's settings on top of the same fields."""
    paths = sorted((LOCAL_TRACK / "cells").glob("*/*.json"))
    assert len(paths) > 50
    plain_keys = []
    for path in paths:
        stored = json.loads(path.read_text())
        method = parse_method(current_method(stored))
        key = _rebuilt_key(stored["key"], method.settings())
        assert key == stored["key"], path.name
        assert path.name.endswith(f"__{cell_id(key)}.json")
        if method == PLAIN:
            assert "method" not in stored["key"], path.name
            plain_keys.append(stored["key"])
    assert plain_keys
    some = plain_keys[0]
    for spec in ("echo", "tp:1-3", "metaeol"):
        assert cell_id(_rebuilt_key(some, parse_method(spec).settings())) != cell_id(some)


def test_the_grid_runs_every_method_from_one_model_and_resumes(tiny_model_dir, labelled_csv, tmp_path, monkeypatch):
    from core.models import registry as models

    loads: list[str] = []
    original = models.load_model

    def counting(name, adapter=None, **kwargs):
        loads.append(name)
        return original(name, adapter, **kwargs)

    monkeypatch.setattr(models, "load_model", counting)
    out = tmp_path / "grid"
    argv = cli(tiny_model_dir, str(labelled_csv), out, "--methods", "plain,echo,tp:1-2,ensemble:none+cluster")
    assert main(argv) == 0
    assert len(loads) == 1  # one loaded model serves every method
    cells = [json.loads(p.read_text()) for p in cell_files(out)]
    groups = {(c["method"], c["prompt"]["name"]) for c in cells}
    # plain spans the prompts; echo, tp and the ensemble bring their own template(s): one group each
    assert groups == {
        ("plain", "none"),
        ("plain", "cluster"),
        ("echo", "echo"),
        ("tp:1-2", "tp"),
        ("ensemble:none+cluster", "ensemble:none+cluster"),
    }
    assert len(cells) == 5 * 2  # x 2 poolings
    by_method = {c["method"]: c for c in cells if c["pooling"] == "last"}
    assert by_method["tp:1-2"]["key"]["tp_start"] == 1 and by_method["tp:1-2"]["key"]["tp_exit"] == 2
    assert by_method["echo"]["key"]["method"] == "echo" and "method" not in by_method["plain"]["key"]
    assert by_method["ensemble:none+cluster"]["prompt"]["templates"] == ["{text}", PROMPTS["cluster"]]
    # echo reads the text twice: more tokens than the plain none prompt
    plain_none = next(c for c in cells if c["method"] == "plain" and c["prompt"]["name"] == "none")
    assert by_method["echo"]["timing"]["tokens"] > plain_none["timing"]["tokens"]

    scores, _ = summary_tables(cells)
    assert list(scores.index.names) == ["variant", "method", "prompt", "pooling", "layer"]
    assert [row[1] for row in scores.index][:4] == ["plain"] * 4  # plain first
    assert "| model | method | prompt | pooling | layer |" in (out / "summary.md").read_text()

    before = {p: p.read_bytes() for p in cell_files(out)}
    assert main(argv) == 0
    assert {p: p.read_bytes() for p in cell_files(out)} == before  # every cell was found under its key


def test_a_bad_method_fails_before_any_model_loads(tmp_path, labelled_csv, capsys):
    assert main(cli(Path("no-such-model"), str(labelled_csv), tmp_path, "--methods", "plain,ensemble:eol")) == 2
    assert "at least two prompts" in capsys.readouterr().err


def test_a_tp_range_outside_the_model_is_a_grid_error(tiny_model_dir, labelled_csv, tmp_path, capsys):
    assert main(cli(tiny_model_dir, str(labelled_csv), tmp_path / "g", "--methods", "tp:1-99")) == 2
    assert "outside this model" in capsys.readouterr().err


METHOD_CELLS = [
    {**cell(variant, prompt, pooling, task, v), **({"method": method} if method else {})}
    for variant, method, prompt, pooling, v in [
        ("m", "tp:1-2", "tp", "last", 0.5),
        ("m", "echo", "echo", "mean", 0.55),
        ("m", None, "eol", "last", 0.6),  # an old cell: plain
        ("m", "plain", "none", "mean", 0.2),
        ("minilm", None, "none", "mean", 0.4),
    ]
    for task in ("r8", "trec-coarse")
]


def test_tables_gain_a_method_column_with_plain_first():
    scores, stds = summary_tables(METHOD_CELLS)
    assert list(scores.index) == [
        ("m", "plain", "none", "mean", "-1"),
        ("m", "plain", "eol", "last", "-1"),
        ("m", "echo", "echo", "mean", "-1"),
        ("m", "tp:1-2", "tp", "last", "-1"),
        ("minilm", "plain", "none", "mean", "-1"),
    ]
    assert markdown_table(scores, stds).startswith("| model | method | prompt | pooling | layer | r8 |")
    view = filter_rows(scores, methods=["echo"])
    assert list(view["method"]) == ["echo", "plain"] and set(view["variant"]) == {"m", BASELINE_MODEL}
    heat, spread = heatmap_frames(view, stds)
    assert list(heat.index) == ["m | echo | echo | mean | -1", "minilm | plain | none | mean | -1"]
    assert list(spread.index) == list(heat.index)
    assert top_rows(scores, 1)[0]["method"] == "plain" and top_rows(scores, 1)[0]["prompt"] == "eol"


@pytest.mark.parametrize("methods", [(), ("plain",)])
def test_a_plain_only_table_has_no_method_column_and_filters_as_plain(methods):
    plain = [c for c in METHOD_CELLS if cell_method(c) == "plain"]
    scores, _ = summary_tables(plain)
    assert list(scores.index.names) == ["variant", "prompt", "pooling", "layer"]
    assert len(filter_rows(scores, methods=methods)) == 3
    assert list(filter_rows(scores, methods=["echo"])["variant"]) == [BASELINE_MODEL]


def _form_cell(method: str | None, name: str, template: str | None = None, templates=None) -> dict:
    prompt = {"name": name, "template": template, **({"templates": list(templates)} if templates else {})}
    return {**cell("m", name, "last", "r8", 0.5), **({"method": method} if method else {}), "prompt": prompt}


def test_mteb_model_names_tell_every_form_apart():
    from analysis.clustering.mteb_results import cell_model_name
    from core.encoding.methods import METAEOL_PROMPTS, METAEOL_SHORT_PROMPTS, TP_TEMPLATES

    forms = {
        "plain none": _form_cell("plain", "none", PROMPTS["none"]),
        "eol, published": _form_cell("plain", "eol", PROMPTS["eol"]),
        "eol-noquote": _form_cell("plain", "eol-noquote", PROMPTS["eol-noquote"]),
        "eol-noquote stored as eol, before methods": _form_cell(None, "eol", PROMPTS["eol-noquote"]),
        "eol normalised": _form_cell("plain+norm", "eol", PROMPTS["eol"]),
        "custom a": _form_cell("plain", "custom", "About {text}:"),
        "custom b": _form_cell("plain", "custom", "Topic of {text}:"),
        "tp": _form_cell("tp:1-6", "tp", TP_TEMPLATES["tp"]),
        "tp-noquote stored as tp": _form_cell("tp:1-6", "tp", TP_TEMPLATES["tp-noquote"]),
        "tp 1-3": _form_cell("tp:1-3", "tp", TP_TEMPLATES["tp"]),
        "metaeol": _form_cell("metaeol", "metaeol", None, METAEOL_PROMPTS),
        "metaeol-short stored as metaeol": _form_cell("metaeol", "metaeol", None, METAEOL_SHORT_PROMPTS),
        "metaeol-short": _form_cell("metaeol-short", "metaeol-short", None, METAEOL_SHORT_PROMPTS),
        "ensemble": _form_cell("ensemble:eol+summarize", "ensemble:eol+summarize", None, ["a {text}", "b {text}"]),
        "echo": _form_cell("echo", "echo", "Rewrite the sentence: {text}\nRewritten sentence: {text}"),
    }
    names = {label: cell_model_name(c) for label, c in forms.items()}
    assert names["plain none"] == "embedding-lens/m__none__last__L-1"
    assert names["eol, published"] == "embedding-lens/m__eol__last__L-1"
    assert (
        names["eol-noquote"]
        == names["eol-noquote stored as eol, before methods"]
        == ("embedding-lens/m__eol-noquote__last__L-1")
    )
    assert names["eol normalised"] == "embedding-lens/m__eol-norm__last__L-1"
    assert names["tp"] == "embedding-lens/m__tp-1-6__last__L-1"
    assert names["tp-noquote stored as tp"] == "embedding-lens/m__tp-noquote-1-6__last__L-1"
    assert (
        names["metaeol-short"]
        == names["metaeol-short stored as metaeol"]
        == ("embedding-lens/m__metaeol-short__last__L-1")
    )
    assert names["echo"] == "embedding-lens/m__echo__last__L-1"
    distinct = [label for label in names if label not in ("eol-noquote stored as eol, before methods",)]
    distinct.remove("metaeol-short stored as metaeol")
    assert len({names[label] for label in distinct}) == len(distinct)  # no two forms share a result file


def test_two_forms_of_one_row_write_two_mteb_results(tmp_path):
    from analysis.clustering.mteb_results import write_cell

    base = json.loads(next((LOCAL_TRACK / "cells" / "r8").glob("smollm2-135m__none__last__*.json")).read_text())
    published = {**base, "method": "plain", "prompt": {"name": "eol", "template": PROMPTS["eol"]}}
    noquote = {**base, "prompt": {"name": "eol", "template": PROMPTS["eol-noquote"]}}  # stored before the rename
    noquote["scores"] = {**base["scores"], "v_measure": 0.123}
    first, second = write_cell(published, tmp_path), write_cell(noquote, tmp_path)
    assert first != second and first.is_file() and second.is_file()
    score = [json.loads(path.read_text())["scores"]["test"][0]["main_score"] for path in (first, second)]
    assert score == [pytest.approx(base["scores"]["v_measure"], abs=1e-6), 0.123]


def test_the_adapter_card_compares_plain_rows_when_methods_are_present(tmp_path):
    from analysis.clustering import ModelSpec, record_adapter_scores
    from core.data import LOCAL_TASKS
    from tests.unit.clustering.test_clustering import make_card_adapter, track_cells

    adapter = make_card_adapter(tmp_path)
    cells = track_cells(tuple(LOCAL_TASKS))
    echo_rows = [
        {**c, "method": "echo", "prompt": {"name": "echo", "template": "{text} {text}"}, "scores": {**c["scores"]}}
        for c in cells
        if c["variant"] == "m" and c["prompt"]["name"] == "none"
    ]
    for row in echo_rows:
        row["scores"]["v_measure"] = 0.95  # better than every plain row: still not a prompt-only base row
    track = record_adapter_scores(ModelSpec("m", str(adapter)), [*cells, *echo_rows], tmp_path)
    assert track is not None
    assert [(row["label"].split(":")[0], row["average"]) for row in track["rows"]] == [
        ("adapter", 0.6),
        ("best prompt-only base", round(0.4 + 0.01 / 6, 4)),
        ("MiniLM", 0.5),
    ]
    assert track["rows"][1]["label"] == "best prompt-only base: m, prompt none, mean pooling, layer -1"


def test_every_committed_cell_keys_the_same_through_the_grids_settings():
    """Each committed cell's setting, rebuilt as the grid builds it (``group_settings``), gives its stored key: the
    grid's move to EmbeddingSetting changes no key, so no committed cell is recomputed."""
    from analysis.clustering.grid import group_settings
    from core.encoding.methods import Ensemble, Plain
    from core.encoding.prompts import resolve_prompt

    paths = sorted(LOCAL_TRACK.parent.glob("*/cells/*/*.json"))
    assert len(paths) > 100
    for path in paths:
        stored = json.loads(path.read_text())
        method = parse_method(current_method(stored))
        if isinstance(method, Ensemble):
            prompt, template = None, None
        elif isinstance(method, Plain):
            name = stored_prompt_name(stored["prompt"])
            prompt = name if name != "custom" else stored["prompt"]["template"]
            template = resolve_prompt(prompt)
        else:
            prompt = current_prompt(stored)
            template = method.template(prompt)
        (setting,) = group_settings(method, prompt, [(stored["pooling"], stored["layer"])], stored["max_length"])
        key = stored["key"]
        rebuilt = _rebuilt_key(
            {**key, "pooling": setting.pooling, "layer": str(setting.layer), "max_length": setting.max_length},
            method.settings(),
        )
        assert rebuilt == key, path
        assert (template.template if template is not None else None) == key["prompt"], path
        assert setting.to_dict()["layer"] == key["layer"] and setting.pooling == key["pooling"]


def test_a_cell_filed_under_its_forms_old_name_is_found_by_its_key(tmp_path):
    from analysis.clustering.store import cell_path, read_cell

    stored = next((LOCAL_TRACK / "cells" / "r8").glob("smollm2-135m__eol__last__*.json"))
    cell = json.loads(stored.read_text())
    assert stored_prompt_name(cell["prompt"]) == "eol-noquote"  # made while eol named the quote-less form
    folder = tmp_path / "cells" / "r8"
    folder.mkdir(parents=True)
    (folder / stored.name).write_bytes(stored.read_bytes())
    today = cell_path(tmp_path, "r8", cell["variant"], "eol-noquote", "last", "-1", cell["key"])
    assert not today.exists() and read_cell(today, cell["key"]) == cell
    other_key = {**cell["key"], "prompt": PROMPTS["eol"]}
    assert read_cell(cell_path(tmp_path, "r8", cell["variant"], "eol", "last", "-1", other_key), other_key) is None


def test_tp_noquote_spec_keys_and_names_as_the_committed_quoteless_tp_cells():
    from analysis.clustering.mteb_results import cell_model_name

    cells = [json.loads(f.read_text()) for f in (LOCAL_TRACK / "cells" / "r8").glob("smollm2-135m__tp__last__*.json")]
    stored = next(c for c in cells if not c["prompt"]["template"].endswith('"'))  # the published tp cell sits beside it
    method = parse_method("tp-noquote:1-6")
    assert method.template().template == stored["prompt"]["template"]  # the form the committed cells used
    assert method.settings() == {key: stored["key"][key] for key in method.settings()}
    assert cell_model_name({**stored, "method": method.spec}) == cell_model_name(stored)
    assert cell_model_name(stored) == "embedding-lens/smollm2-135m__tp-noquote-1-6__last__L-1"
