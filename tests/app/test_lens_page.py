"""The Lens page on the tiny model: top tokens per layer for base, adapter and their difference; the corpus view
from a lens report; settings in the URL."""

from __future__ import annotations

import pytest

from tests.unit.lens.test_report import tiny_config


def charts(app) -> list:
    return app.get("plotly_chart")


@pytest.fixture(scope="module")
def lens_report_folder(tiny_model_dir, tiny_adapter_dir, tmp_path_factory):
    from analysis.lens.report import run_report

    tmp = tmp_path_factory.mktemp("lens-report")
    config = tiny_config(tiny_model_dir, tiny_adapter_dir, tmp)
    run_report(config)
    return tmp / "out" / config.name


def test_lens_page_shows_base_adapter_and_difference(open_page):
    app = open_page("lens.py")
    assert not app.exception and not app.error
    assert len(charts(app)) == 2  # base and adapter token grids
    assert app.subheader[0].value == "Top tokens at every layer"
    assert any("No lens report" in i.value for i in app.info)
    frames = app.dataframe
    assert len(frames) == 2  # the difference per layer and the content tokens' best ranks
    before = frames[0].value.copy()
    app.text_input(key="lens_text").set_value("The market fell sharply today.").run()
    assert not app.exception and not app.dataframe[0].value.equals(before)
    assert app.query_params["text"] == "The market fell sharply today."
    app.number_input(key="lens_top_k").set_value(3).run()
    assert not app.exception and app.query_params["k"] == "3"


def test_lens_page_base_only(open_page):
    app = open_page("lens.py", adapter=False)
    assert not app.exception and len(charts(app)) == 1
    assert any("No adapter loaded" in i.value for i in app.info)


def test_lens_page_corpus_view_and_pc_switch(open_page, lens_report_folder):
    app = open_page("lens.py")
    app.text_input(key="lens_folder").set_value(str(lens_report_folder)).run()
    assert not app.exception and not app.error
    assert len(charts(app)) == 2 + 3  # token grids + alignment, layer profile, CKA
    toggle = app.toggle(key="lens_remove_pc")
    assert not toggle.disabled
    toggle.set_value(True).run()
    assert not app.exception and "first principal component removed" in app.subheader[0].value
    app.radio(key="lens_view").set_value("pc_removed").run()
    assert not app.exception and app.query_params["view"] == "pc_removed"


def test_lens_page_refuses_an_encoder_model(open_page, tiny_bert_dir):
    app = open_page("lens.py", adapter=False)
    app.text_input(key="model_custom").set_value(str(tiny_bert_dir)).run()
    assert not app.exception
    assert any("no LM head" in e.value for e in app.error)


def trace_names(chart) -> list[str]:
    import json

    return [trace.get("name") or trace.get("text", [""])[0] for trace in json.loads(chart.proto.spec)["data"]]


def test_clustering_quality_page_draws_a_lens_reports_layer_profile(open_page):
    """The layer profile where clustering quality is read: a committed lens report, its poolings in the URL."""
    import json

    from analysis.lens.reading import find_reports
    from workbench.state import REPO

    reports = find_reports(REPO / "results" / "lens")
    assert reports, "the committed lens reports are missing"
    app = open_page("clustering_quality.py", adapter=False)
    assert not app.exception and not app.error
    assert any(h.value.startswith("Layer profile") for h in app.header)
    name = app.selectbox(key="q_lens_report").value
    profile = next(iter(json.loads(reports[name].read_text())["profiles"].values()))
    names = trace_names(charts(app)[-1])
    assert {f"{v} · {p}" for v in ("base", "adapter") for p in profile["poolings"]} <= set(names)
    assert any(n.startswith("best adapter") for n in names)
    assert len(app.get("download_button")) >= 4  # figure (HTML, PNG), profile CSV, V-measure NPY
    app.multiselect(key="q_lens_poolings").set_value(["mean"]).run()
    assert not app.exception and app.query_params["lens_pool"] == "mean"
    names = trace_names(charts(app)[-1])
    assert "adapter · mean" in names and "adapter · last" not in names
    assert "best adapter: mean" in app.caption[-1].value
