"""Pages that read the prepared local-track data (real cache root), on the tiny model for speed."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", autouse=True)
def prepared_data(user_cache_root):
    from core.data import DataError, load_task

    try:
        load_task("trec-coarse", "test")
    except DataError as error:
        pytest.skip(f"local-track data not prepared: {error}")


def test_cluster_explorer_projects_base_and_adapter_and_scores_them(open_page):
    app = open_page("cluster_explorer.py", timeout=300)
    app.slider[0].set_value(200).run()  # 200 texts keeps the tiny-model test quick
    assert not app.exception and not app.error
    assert len(app.get("plotly_chart")) == 2
    labels = [m.label for m in app.metric]
    assert [label for label in labels if label.startswith("V-measure")] == ["V-measure (base)", "V-measure (adapter)"]
    assert [label.split(",")[0] for label in labels if label.startswith("Silhouette")] == [
        "Silhouette (base",
        "Silhouette (adapter",
    ]  # the label-free score beside each V-measure
    for metric in app.metric:  # "0.412 ± 0.010": the score ± its spread
        low = -1.0 if metric.label.startswith("Silhouette") else 0.0
        assert low <= float(metric.value.split()[0]) <= 1.0, (metric.label, metric.value)
    colour = next(r for r in app.radio if r.label == "Colour by")
    colour.set_value("k-means").run()
    assert not app.exception and len(app.get("plotly_chart")) == 2
    assert any("UMAP" in c.value for c in app.caption)


def test_cluster_explorer_refuses_more_clusters_than_texts(open_page):
    app = open_page("cluster_explorer.py", timeout=300)
    app.slider[0].set_value(100).run()
    k = next(s for s in app.slider if s.label.startswith("k ("))
    assert k.max <= 99  # the widget itself never offers k >= the number of texts


def test_attention_page_takes_a_sentence_from_a_dataset(open_page):
    app = open_page("attention.py")
    app.radio[0].set_value("pick from a dataset").run()
    assert not app.exception and not app.error and len(app.get("plotly_chart")) == 5
