"""Cluster explorer, issue #28: neighbour overlap colouring, movers, cluster names, search, two saved runs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests.app.test_pages import charts, prepared_tasks  # noqa: F401 (a fixture)


def markdown_text(app) -> str:
    return "\n".join(m.value for m in app.markdown)


def test_base_vs_adapter_shows_overlap_movers_names_and_search(open_page, prepared_tasks):  # noqa: F811
    app = open_page("cluster_explorer.py")
    app.slider(key="explore_size").set_value(100).run()
    app.radio(key="explore_colour").set_value("neighbour overlap").run()
    assert not app.exception and not app.error and len(charts(app)) == 2
    assert "Jaccard@10" in charts(app)[0].proto.spec
    assert "Mean Jaccard@10" in markdown_text(app) and "95% CI" in markdown_text(app)
    frames = {tuple(frame.value.columns)[:3]: frame.value for frame in app.dataframe}
    names = next(f for cols, f in frames.items() if cols[:2] == ("side", "cluster"))
    assert set(names["side"]) == {"base"} and names["top_words"].str.len().gt(0).any()  # gold labels: one side
    app.slider(key="explore_nk").set_value(3).run()
    assert "Mean Jaccard@3" in markdown_text(app) and app.query_params["nk"] == "3"
    app.text_input(key="explore_query").set_value("What is the capital of France?").run()
    assert not app.exception and any("Nearest texts" in s.value for s in app.subheader)
    hits = next(f.value for f in app.dataframe if "cos_adapter" in f.value.columns)
    assert {"cos_base", "rank_base", "rank_adapter"} <= set(hits.columns) and len(hits) >= 10
    assert app.query_params["q"] == "What is the capital of France?"


@pytest.fixture()
def saved_runs(tmp_path):
    """Two runs of 60 labelled texts in three topics; run B moves texts 0 and 1 into another topic."""
    rng = np.random.default_rng(0)
    topics = {"sport": "football goal match", "food": "bread soup cheese", "music": "guitar song concert"}
    centres = {topic: rng.normal(size=16) * 4 for topic in topics}
    rows, first = [], []
    for n in range(60):
        topic = list(topics)[n % 3]
        rows.append({"text": f"{topics[topic]} item {n}", "label": topic})
        first.append(centres[topic] + rng.normal(size=16))
    pd.DataFrame(rows).to_csv(tmp_path / "texts.csv", index=False)
    second = np.array(first, dtype=np.float32)
    second[:2] = centres["music"] + rng.normal(size=(2, 16)) * 0.1
    for name, matrix in (("layer_a", np.array(first, dtype=np.float32)), ("layer_b", second)):
        np.save(tmp_path / f"{name}.npy", matrix)
        (tmp_path / f"{name}.json").write_text(json.dumps({"input": str(tmp_path / "texts.csv")}))
    return tmp_path


def test_two_saved_runs_compare_and_list_the_planted_movers(open_page, saved_runs):
    app = open_page("cluster_explorer.py", adapter=False)
    app.radio(key="explore_compare").set_value("two saved runs").run()
    assert not app.exception and not charts(app)
    app.text_input(key="explore_run_a").set_value(str(saved_runs / "layer_a.npy"))
    app.text_input(key="explore_run_b").set_value(str(saved_runs / "layer_b.npy"))
    app.text_input(key="explore_texts").set_value(str(saved_runs / "texts.csv"))
    app.text_input(key="explore_label_column").set_value("label").run()
    assert not app.exception and not app.error and len(charts(app)) == 2
    movers = next(f.value for f in app.dataframe if "lost" in f.value.columns)
    assert set(movers["index"].iloc[:2]) == {0, 1} and (movers["jaccard"].iloc[:2] < 0.5).all()
    assert app.query_params["compare"] == "two saved runs" and app.query_params["run_a"].endswith("layer_a.npy")
    app.toggle(key="explore_linked").set_value(True).run()
    assert not app.exception and app.query_params["linked"] == "True"
    app.text_input(key="explore_query").set_value("bread").run()  # sidecars without a model: said, not crashed
    assert not app.exception and any("Search unavailable" in w.value for w in app.warning)


def test_two_runs_of_other_texts_are_refused(open_page, saved_runs):
    pd.DataFrame({"text": [f"another text {n}" for n in range(60)]}).to_csv(saved_runs / "other.csv", index=False)
    app = open_page("cluster_explorer.py", adapter=False)
    app.radio(key="explore_compare").set_value("two saved runs").run()
    app.text_input(key="explore_run_a").set_value(str(saved_runs / "layer_a.npy"))
    app.text_input(key="explore_run_b").set_value(str(saved_runs / "layer_b.npy"))
    app.text_input(key="explore_texts").set_value(str(saved_runs / "other.csv")).run()
    assert not app.exception and "text lists differ" in app.error[0].value and not charts(app)
