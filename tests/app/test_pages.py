"""Every page renders without an exception on the tiny model, and its main control changes what it shows."""

from __future__ import annotations

import pytest


def charts(app) -> list:
    return app.get("plotly_chart")


def test_overview_shows_model_adapter_card_and_track(open_page, tiny_model_dir):
    app = open_page("overview.py")
    assert not app.exception
    assert app.title[0].value == "Embedding Lens"
    text = " ".join(m.value for m in app.markdown)
    assert str(tiny_model_dir) in text and "Cluster explorer" in text
    assert any("smollm2-135m" in str(table.value) for table in app.table)


def test_embed_page_compares_base_and_adapter(open_page):
    app = open_page("embed.py")
    assert not app.exception and not app.error
    assert len(charts(app)) == 3  # base, adapter, difference
    before = app.caption[-1].value
    assert "Mean off-diagonal cosine" in before
    app.text_area[0].set_value("a cat sleeps\na dog barks\nthe market fell").run()
    assert not app.exception and len(charts(app)) == 3
    assert app.caption[-1].value != before


def test_embed_page_without_adapter_and_with_bad_input(open_page):
    app = open_page("embed.py", adapter=False)
    assert not app.exception and len(charts(app)) == 1
    assert any("No adapter loaded" in i.value for i in app.info)
    app.text_area[0].set_value("only one line").run()
    assert any("at least two texts" in w.value for w in app.warning)
    app.selectbox(key="embed_prompt").set_value("custom template...").run()
    app.text_input(key="embed_template").set_value("no placeholder").run()
    assert app.error and "{text}" in app.error[0].value and not app.exception


def test_missing_adapter_folder_is_a_friendly_error(open_page, tmp_path):
    app = open_page("embed.py", adapter=False)
    app.text_input(key="adapter_custom").set_value(str(tmp_path / "nope")).run()
    assert not app.exception and "does not exist" in app.error[0].value and "make adapter" in app.error[0].value


def test_attention_page_heatmaps_and_head_choice(open_page):
    app = open_page("attention.py")
    assert not app.exception and not app.error
    assert len(charts(app)) == 5  # base, adapter, difference heatmaps + two role-share charts
    heads = next(s for s in app.selectbox if s.label == "Heads")
    heads.set_value("head 1").run()
    assert not app.exception and len(charts(app)) == 5
    assert app.subheader[0].value == "Attention of the last token (the pooled token)"
    app.selectbox(key="attention_pooling").set_value("mean").run()
    assert "last token (mean pooling reads every token" in app.subheader[0].value
    app.text_input(key="attention_layer").set_value("last2").run()
    assert not app.exception and any("(L1, L2)" in c.value for c in app.caption)  # the pooled layers, outlined
    app.text_input(key="attention_layer").set_value("abc").run()
    assert not app.exception and "Bad layer 'abc'" in app.error[0].value and not charts(app)


def test_attribution_page_runs_ig_on_click(open_page):
    app = open_page("attribution.py")
    assert not app.exception and not charts(app)  # nothing runs before the click
    app.button[0].click().run()
    assert not app.exception and not app.error
    assert [m.label for m in app.metric] == ["cosine (base)", "cosine (adapter)"]
    assert any("convergence delta" in c.value for c in app.caption)
    # two IG bar charts, the token-pair heatmaps, base and adapter deletion curves of text A
    assert len(charts(app)) == 5
    assert sum("token pairs that move it most" in m.value for m in app.markdown) == 2


def test_clustering_quality_filters_keep_the_baseline(open_page):
    app = open_page("clustering_quality.py", adapter=False)
    assert not app.exception and not app.error
    everything = len(app.dataframe[0].value)
    app.multiselect(key="q_prompts").set_value(["cluster"]).run()
    rows = app.dataframe[0].value
    assert not app.exception and len(rows) < everything
    assert set(rows["prompt"]) == {"cluster", "none"} and "minilm" in set(rows["variant"])


def test_clustering_quality_without_results_says_how_to_make_them(open_page, tmp_path):
    app = open_page("clustering_quality.py", adapter=False)
    app.text_input[-1].set_value(str(tmp_path)).run()
    assert not app.exception and "python -m analysis.clustering" in app.error[0].value


def test_adapters_page_lists_cards_and_curves(open_page, tmp_path):
    app = open_page("adapters.py")
    assert not app.exception
    assert any(e.label.startswith("smollm2-135m-embed") for e in app.expander)
    assert len(charts(app)) >= 1  # the shipped adapter's training curve
    app.text_input[0].set_value(str(tmp_path / "missing")).run()
    assert not app.exception and "No folder" in app.error[0].value


@pytest.mark.parametrize("name", ["bad name!", ""])
def test_adapters_page_refuses_bad_run_names(open_page, name):
    app = open_page("adapters.py")
    form_name = next(t for t in app.text_input if t.label.startswith("Name"))
    form_name.set_value(name)
    app.button[0].click().run()
    assert not app.exception and "letters, digits" in app.error[0].value
