"""Pages with numbers a researcher can trust (issue 32): the quality table's uncertainty, the explorer's label-free
score and upload handling, the attention page's content shares, and what the URL keeps."""

from __future__ import annotations

import json

import numpy as np

from analysis.clustering.uncertainty import text_uncertainty
from tests.app.test_cluster_explorer import saved_runs  # noqa: F401 (a fixture)
from tests.app.test_pages import prepared_tasks  # noqa: F401 (a fixture)


def charts(app) -> list:
    return app.get("plotly_chart")


def write_cells(folder, rows: dict[str, float], tasks=("r8", "trec-coarse"), with_replicates=("m", "m+a")) -> None:
    """Grid cells of constructed blobs: ``rows`` maps a variant to how far apart its labels are."""
    rng = np.random.default_rng(0)
    for task in tasks:
        labels = [f"l{i % 3}" for i in range(60)]
        noise = rng.normal(size=(60, 8))
        for number, (variant, separation) in enumerate(rows.items()):
            vectors = noise + separation * np.eye(8)[[int(label[1]) for label in labels]]
            stored = text_uncertainty(vectors, labels, seeds=(42, 43))
            v = float(np.mean(stored["v_measure"]))
            cell = {
                "variant": variant, "prompt": {"name": "eol", "template": "{text}"}, "pooling": "mean", "layer": "-1",
                "max_length": 64, "task": {"name": task, "texts": 60, "clusters": 3, "sample_sha256": task},
                "kmeans": {"seeds": [42, 43]}, "key": {"task": task, "variant": variant},
                "scores": {"v_measure": v, "v_measure_std": 0.005, "v_measure_per_seed": [v - 0.005, v + 0.005]},
            }  # fmt: skip
            if variant in with_replicates:
                cell["uncertainty"] = stored
            path = folder / "cells" / task / f"{number}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(cell))


def test_clustering_quality_shows_ci_n_and_noise_and_keeps_the_sorted_column_in_view(open_page, tmp_path):
    write_cells(tmp_path, {"m": 1.0, "m+a": 3.0, "minilm": 0.2})
    app = open_page("clustering_quality.py", adapter=False)
    app.text_input(key="q_folder").set_value(str(tmp_path)).run()
    assert not app.exception and not app.error
    table = app.dataframe[0].value.set_index("variant")
    assert all(" ± " in value for value in table["average ±"])
    assert (table["n texts"] == 120).all()
    assert table.loc["m+a", "spread"].startswith("texts") and table.loc["minilm", "spread"].startswith("k-means")
    assert " ± " in table.loc["m+a", "vs base ±"] and table.loc["m+a", "within noise of best"]
    assert not table.loc["minilm", "within noise of best"]
    app.selectbox(key="q_sort").set_value("vs base").run()
    order = list(app.dataframe[0].proto.column_order)
    assert order.index("vs base") <= 5  # right after the row's names, not off-screen
    bars = json.loads(charts(app)[0].proto.spec)
    colours = [trace["marker"]["color"] for trace in bars["data"]]
    assert len(colours) == len(set(colours)) == 3 and bars["data"][0]["orientation"] == "h"
    assert "error_x" in bars["data"][0]
    app.slider(key="q_bars_n").set_value(1).run()
    bars = json.loads(charts(app)[0].proto.spec)
    assert sum(len(trace["y"]) for trace in bars["data"]) == 1


def test_the_quality_page_keeps_the_model_in_the_url(tiny_model_dir):
    from streamlit.testing.v1 import AppTest

    from tests.app.test_app import APP

    app = AppTest.from_file(APP, default_timeout=120).run()
    app.selectbox(key="model_pick").set_value("custom folder or hub id...").run()
    app.switch_page("../pages/clustering_quality.py").run()
    assert not app.exception and app.query_params["model"] == "custom folder or hub id..."


def test_the_explorer_scores_unlabelled_texts_and_k_follows_the_label_count(open_page, saved_runs):  # noqa: F811
    app = open_page("cluster_explorer.py", adapter=False)
    app.radio(key="explore_compare").set_value("two saved runs").run()
    app.text_input(key="explore_run_a").set_value(str(saved_runs / "layer_a.npy"))
    app.text_input(key="explore_run_b").set_value(str(saved_runs / "layer_b.npy"))
    app.text_input(key="explore_texts").set_value(str(saved_runs / "texts.csv")).run()
    assert not app.exception and not app.error
    metrics = {m.label: m.value for m in app.metric}
    assert not any(label.startswith("V-measure") for label in metrics)  # no labels: no V-measure...
    silhouettes = [value for label, value in metrics.items() if label.startswith("Silhouette")]
    assert len(silhouettes) == 2 and all(" ± " in value for value in silhouettes)  # ...but a label-free number
    assert app.slider(key="explore_k").value == 8  # no labels: the default k
    app.text_input(key="explore_label_column").set_value("label").run()
    assert app.slider(key="explore_k").value == 3  # k follows the three labels
    assert "Silhouette (layer_a, k-means k=3)" in {m.label for m in app.metric}
    app.slider(key="explore_k").set_value(5).run()
    app.toggle(key="explore_names").set_value(False).run()
    assert app.slider(key="explore_k").value == 5  # the user's k holds while the data stays


def test_attention_shows_the_content_share_for_the_sentence_and_a_dataset(open_page, prepared_tasks):  # noqa: F811
    app = open_page("attention.py")
    assert not app.exception and not app.error
    sentence = app.dataframe[0].value
    assert list(sentence["side"]) == ["base", "adapter", "adapter − base"] and (sentence["n"] == 1).all()
    diff = sentence.set_index("side")["share"]
    assert abs(diff["adapter − base"] - (diff["adapter"] - diff["base"])) < 1e-9
    app.number_input(key="att_share_n").set_value(6).run()
    next(b for b in app.button if b.label == "Compute the average").click().run()
    assert not app.exception and not app.error
    rows = app.dataframe[1].value.set_index("side")
    assert (
        (rows["n"] == 6).all() and (rows["ci_low"] <= rows["share"]).all() and (rows["share"] <= rows["ci_high"]).all()
    )
    app.selectbox(key="att_heads").set_value("head 1").run()  # another widget: the dataset's result stays
    assert len(app.dataframe) == 2 and len(app.dataframe[1].value) == 3


def test_a_long_sentence_stays_out_of_the_url(open_page):
    app = open_page("attention.py")
    app.text_input(key="att_sentence").set_value("a cat sat on the mat").run()
    assert app.query_params["sentence"] == "a cat sat on the mat"
    long = "word " * 400
    app.text_input(key="att_sentence").set_value(long).run()
    assert not app.exception and "sentence" not in app.query_params and "model" in app.query_params
    assert app.text_input(key="att_sentence").value == long.strip() or app.text_input(key="att_sentence").value == long
