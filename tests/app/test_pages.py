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


def test_attention_sentence_and_heads_hold_after_a_dataset_round_trip(open_page, prepared_tasks):
    app = open_page("attention.py")
    app.text_input(key="att_sentence").set_value("the cat sat on the mat").run()
    app.selectbox(key="att_heads").set_value("head 1").run()
    app.radio(key="att_source").set_value("pick from a dataset").run()
    assert not app.exception and len(charts(app)) == 5
    app.radio(key="att_source").set_value("type one").run()
    assert app.text_input(key="att_sentence").value == "the cat sat on the mat"
    assert app.selectbox(key="att_heads").value == "head 1" and not app.exception


def test_clustering_quality_filters_keep_the_baseline(open_page):
    app = open_page("clustering_quality.py", adapter=False)
    assert not app.exception and not app.error
    everything = len(app.dataframe[0].value)
    first = app.dataframe[0].value
    assert first[first["role"] == "adapter"]["vs base"].notna().all() and (first["role"] == "adapter").any()
    assert "MiniLM baseline" in charts(app)[0].proto.spec  # the baseline line on the bar chart
    app.multiselect(key="q_prompts").set_value(["cluster"]).run()
    rows = app.dataframe[0].value
    assert not app.exception and len(rows) < everything
    assert set(rows["prompt"]) == {"cluster", "none"} and "minilm" in set(rows["variant"])
    roles = dict(zip(rows["variant"], rows["role"], strict=True))
    assert roles["minilm"] == "baseline"
    app.selectbox(key="q_sort").set_value("r8").run()
    app.toggle(key="q_ascending").set_value(True).run()
    rows = app.dataframe[0].value
    assert not app.exception and list(rows["r8"]) == sorted(rows["r8"])


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


@pytest.fixture
def prepared_tasks(monkeypatch):
    """The user's prepared local tasks, inside the tests' own home; prepared there first on a fresh machine
    (``prepare`` keeps a current task as it is), so CI runs these tests too instead of skipping them."""
    import os
    from pathlib import Path

    from core.data.tasks import prepare
    from core.runtime.paths import cache_root

    data = Path(os.environ["EMBEDDING_LENS_USER_HOME"]) / "data"
    prepare(["trec-coarse"], data_dir=data)
    link = cache_root() / "data"
    if not link.exists():
        link.symlink_to(data, target_is_directory=True)


def test_model_choice_and_page_inputs_hold_across_pages(tiny_model_dir):
    from streamlit.testing.v1 import AppTest

    from tests.app.test_app import APP
    from workbench.state import NO_ADAPTER

    app = AppTest.from_file(APP, default_timeout=120).run()
    app.selectbox(key="model_pick").set_value("custom folder or hub id...").run()
    app.text_input(key="model_custom").set_value(str(tiny_model_dir)).run()
    app.selectbox(key="adapter_pick").set_value(NO_ADAPTER).run()
    app.number_input(key="max_length").set_value(96).run()
    assert app.selectbox(key="device").options[:2] == ["auto", "cpu"]  # then whatever GPUs this machine has
    app.selectbox(key="device").set_value("cpu").run()
    app.switch_page("../pages/embed.py").run()
    assert not app.exception
    app.text_area(key="embed_texts").set_value("a cat sleeps\na dog barks").run()
    app.text_area(key="embed_labels").set_value("").run()
    app.switch_page("../pages/clustering_quality.py").run()  # a page without the sidebar choice
    app.switch_page("../pages/embed.py").run()
    assert not app.exception and not app.error
    assert app.text_area(key="embed_texts").value == "a cat sleeps\na dog barks"
    assert app.selectbox(key="adapter_pick").value == NO_ADAPTER
    assert app.text_input(key="model_custom").value == str(tiny_model_dir)
    assert app.number_input(key="max_length").value == 96
    header = app.caption[0].value
    assert str(tiny_model_dir) in header and "none (base model only)" in header and "96 tokens" in header
    assert "device cpu" in header and app.selectbox(key="device").value == "cpu"
    assert app.query_params["max_length"] == "96" and app.query_params["adapter"] == NO_ADAPTER
    assert app.query_params["device"] == "cpu"


def test_a_bookmarked_url_restores_the_choice():
    from streamlit.testing.v1 import AppTest

    from tests.app.test_app import APP
    from workbench.state import NO_ADAPTER

    app = AppTest.from_file(APP, default_timeout=120)
    app.query_params.update({"max_length": "128", "adapter": NO_ADAPTER, "model": "no-such-model", "device": "cuda:7"})
    app.run()
    assert not app.exception
    assert app.selectbox(key="device").value == "auto"  # a device this machine lacks falls back to auto
    assert app.number_input(key="max_length").value == 128 and app.selectbox(key="adapter_pick").value == NO_ADAPTER
    assert app.selectbox(key="model_pick").value == "smollm2-135m"  # an unknown name falls back to the default


def test_embed_page_answers_within_versus_between_labels_and_counts_truncation(open_page):
    app = open_page("embed.py")
    assert [m.label for m in app.metric] == ["within − between label (base)", "within − between label (adapter)"]
    assert not app.warning
    app.number_input(key="max_length").set_value(4).run()
    assert not app.exception and "leaves no room for text" in app.error[0].value
    app.number_input(key="max_length").set_value(32).run()
    app.text_area(key="embed_texts").set_value("a cat\n" + "a very long sentence about many things " * 4).run()
    app.text_area(key="embed_labels").set_value("").run()
    assert not app.exception and not app.metric
    assert any("1 of 2 texts are longer than 32 tokens" in w.value for w in app.warning)


def test_cluster_explorer_embeds_a_small_sample_and_scores_with_spread(open_page, prepared_tasks):
    app = open_page("cluster_explorer.py")
    assert not app.exception
    if app.button:  # the default sample waits for a click
        app.slider(key="explore_size").set_value(100).run()
    assert not app.exception and not app.error
    assert len(charts(app)) == 2
    assert any("100 texts shown" in c.value for c in app.caption)
    assert all("±" in m.value for m in app.metric) and len(app.metric) == 4  # V-measure and silhouette per side
    app.radio(key="explore_colour").set_value("k-means").run()
    assert not app.exception and len(charts(app)) == 2


def test_adapters_page_offers_resume_and_keeps_the_watched_run_in_the_url(tiny_model_dir):
    import json

    from streamlit.testing.v1 import AppTest

    from tests.conftest import PAGES_DIR
    from workbench.state import TRAINED_DIR

    folder = TRAINED_DIR / "stopped-run"
    (folder / "checkpoints" / "step-2").mkdir(parents=True)
    row = {"step": 2, "loss": 1.5, "pairs_per_s": 3.0, "peak_rss_mb": 100, "lr": 1e-4}
    (folder / "train_log.jsonl").write_text(json.dumps(row) + "\n")
    command = ["python", "-m", "core.train", "--out", str(folder), "--steps", "10"]
    (folder / "job.json").write_text(json.dumps({"pid": 2**22 + 7, "command": command, "stopped": 1.0}))
    app = AppTest.from_file(str(PAGES_DIR / "adapters.py"), default_timeout=60)
    app.query_params["watch"] = str(folder)  # a reload of the page that watched this run
    app.run()
    assert not app.exception
    assert any(e.label == "stopped-run: stopped" for e in app.expander)
    assert any(b.label == "Resume" for b in app.button)
    assert any(c.value == "Its checkpoints are adapters too: pick one in a model page's sidebar." for c in app.caption)
    assert any(h.value == "stopped-run: stopped" for h in app.subheader)  # the live view, back after the reload
    output = next(t for t in app.text_input if t.label.startswith("Output folder"))
    assert output.value == str(TRAINED_DIR)


def test_the_sidebar_offers_each_shipped_adapter_only_with_its_base_model():
    from core.models.adapters import ADAPTERS_DIR, SHIPPED_ADAPTER
    from workbench.state import adapter_folders

    gemma = str(ADAPTERS_DIR / "gemma3-270m-embed")
    assert str(SHIPPED_ADAPTER) in adapter_folders("smollm2-135m") and gemma not in adapter_folders("smollm2-135m")
    assert gemma in adapter_folders("gemma3-270m") and str(SHIPPED_ADAPTER) not in adapter_folders("gemma3-270m")


def test_a_stopped_runs_checkpoint_is_an_adapter_in_the_sidebar(open_page, tiny_adapter_dir):
    import json
    import shutil

    from workbench.state import TRAINED_DIR

    run = TRAINED_DIR / "half-trained"
    checkpoint = run / "checkpoints" / "step-000004"
    shutil.copytree(tiny_adapter_dir, checkpoint)
    (run / "train_log.jsonl").write_text(json.dumps({"step": 4, "loss": 1.2}) + "\n")
    (run / "job.json").write_text(json.dumps({"pid": 2**22 + 9, "command": [], "stopped": 1.0}))
    app = open_page("embed.py", adapter=False)
    picker = app.selectbox(key="adapter_pick")
    assert "half-trained at step 4 (checkpoint of a stopped run): " + str(checkpoint) in picker.options
    picker.set_value(str(checkpoint)).run()
    assert not app.exception and not app.error
    assert len(charts(app)) == 3  # base, the checkpoint as adapter, difference
    assert str(checkpoint) in app.caption[0].value and app.query_params["adapter"] == str(checkpoint)


def test_embed_page_method_chooser_reaches_the_encoder_and_the_url(open_page):
    app = open_page("embed.py")
    assert app.selectbox(key="embed_method").options == ["plain", "echo", "tp", "metaeol", "metaeol-short", "ensemble"]
    before = app.caption[-1].value
    app.selectbox(key="embed_method").set_value("echo").run()
    assert not app.exception and not app.error and len(charts(app)) == 3
    assert "Method `echo`" in app.caption[-1].value and app.caption[-1].value != before
    assert app.query_params["method"] == "echo"
    app.text_input(key="embed_echo_template").set_value("Say {text} again").run()
    assert not app.exception and not charts(app) and "exactly twice" in app.error[0].value  # core's ConfigError
    app.text_input(key="embed_echo_template").set_value("Rewrite: {text}\nAgain: {text}").run()
    assert not app.error and len(charts(app)) == 3
    app.selectbox(key="embed_method").set_value("tp").run()
    assert not app.exception and not app.error and "Method `tp:1-" in app.caption[-1].value
    app.text_input(key="embed_tp_layers").set_value("1-9").run()
    assert not app.exception and "outside this model's 3 decoder layers" in app.error[0].value
    app.text_input(key="embed_tp_layers").set_value("1-2").run()
    assert not app.error and "Method `tp:1-2`" in app.caption[-1].value
    assert app.query_params["tp_layers"] == "1-2"
    app.selectbox(key="embed_method").set_value("ensemble").run()
    assert not app.error and "Method `ensemble:eol+summarize+cluster`" in app.caption[-1].value
    app.multiselect(key="embed_ensemble").set_value(["eol"]).run()
    assert not app.exception and "at least two prompts" in app.error[0].value
    app.selectbox(key="embed_method").set_value("metaeol").run()
    assert not app.exception and not app.error and "Method `metaeol`" in app.caption[-1].value


def test_a_bookmarked_url_restores_the_method(tiny_model_dir):
    from streamlit.testing.v1 import AppTest

    from tests.conftest import PAGES_DIR
    from workbench.state import NO_ADAPTER

    app = AppTest.from_file(str(PAGES_DIR / "embed.py"), default_timeout=120)
    app.query_params.update({"method": "ensemble", "ensemble": "eol,cluster", "adapter": NO_ADAPTER})
    app.session_state["model_pick"] = "custom folder or hub id..."
    app.session_state["model_custom"] = str(tiny_model_dir)
    app.run()
    assert not app.exception and not app.error
    assert app.selectbox(key="embed_method").value == "ensemble"
    assert app.multiselect(key="embed_ensemble").value == ["eol", "cluster"]
    # base only: a sidebar caption comes after the method caption
    assert any("Method `ensemble:eol+cluster`" in caption.value for caption in app.caption)


def test_attention_page_method_chooser(open_page):
    app = open_page("attention.py")
    assert app.selectbox(key="attention_method").options == ["plain", "echo", "tp"]  # one wrapped text each
    assert "#ff7f0e" not in charts(app)[0].proto.spec and "#17becf" not in charts(app)[0].proto.spec
    app.selectbox(key="attention_method").set_value("echo").run()
    assert not app.exception and not app.error and len(charts(app)) == 5
    assert "#ff7f0e" in charts(app)[0].proto.spec  # echo's first copy, coloured apart on the token axis
    app.selectbox(key="attention_method").set_value("tp").run()
    app.text_input(key="attention_tp_layers").set_value("2-1").run()
    assert not app.exception and "TP layer range 2-1" in app.error[0].value and not charts(app)
    app.text_input(key="attention_tp_layers").set_value("1-3").run()
    assert not app.exception and not app.error and len(charts(app)) == 5
    assert "#17becf" in charts(app)[0].proto.spec  # the placeholder's colour


def test_cluster_explorer_method_and_stop_between_batches(open_page, prepared_tasks, monkeypatch):
    import streamlit as st

    from workbench import widgets

    app = open_page("cluster_explorer.py")
    app.slider(key="explore_size").set_value(150).run()
    app.selectbox(key="explore_method").set_value("tp").run()
    assert not app.exception and not app.error and len(charts(app)) == 2
    real = widgets.progress_with_eta
    reports: list[int] = []

    def click_stop_after_one_batch(bar, what, unit="texts"):
        report = real(bar, what, unit)

        def stopping(done: int, total: int) -> None:
            reports.append(done)
            report(done, total)
            if done:  # what a click on Stop does: its callback, then Streamlit ends this run at the next report
                widgets.mark_stopped("explore_stopped")
                st.rerun()

        return stopping

    monkeypatch.setattr(widgets, "progress_with_eta", click_stop_after_one_batch)
    app.selectbox(key="explore_method").set_value("echo").run()
    assert not app.exception and reports == [0, 64]  # the first batch of 64 texts, then nothing more
    assert not charts(app) and "Embedding stopped" in app.warning[-1].value
    monkeypatch.setattr(widgets, "progress_with_eta", real)
    app.slider(key="explore_k").set_value(5).run()  # the page stays usable and does not start over by itself
    assert not app.exception and not charts(app)
    next(b for b in app.button if b.label == "Embed and project").click().run()
    assert not app.exception and not app.error and len(charts(app)) == 2 and not app.warning


def test_clustering_quality_compares_methods(open_page, tmp_path):
    import json

    def cell(variant: str, method: str, task: str, v: float) -> dict:
        return {
            "variant": variant, "method": method, "prompt": {"name": "eol", "template": "{text}"}, "pooling": "last",
            "layer": "-1", "max_length": 128, "task": {"name": task, "texts": 10, "clusters": 2},
            "kmeans": {"seeds": [42]}, "scores": {"v_measure": v, "v_measure_std": 0.01}, "key": {"task": task},
        }  # fmt: skip

    rows = [("m", "plain", 0.5), ("m", "echo", 0.55), ("m", "tp:1-2", 0.52), ("minilm", "plain", 0.4)]
    for number, (variant, method, v) in enumerate(rows):
        for task in ("r8", "trec"):
            folder = tmp_path / "cells" / task
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{number}.json").write_text(json.dumps(cell(variant, method, task, v)))
    app = open_page("clustering_quality.py", adapter=False)
    app.text_input(key="q_folder").set_value(str(tmp_path)).run()
    assert not app.exception and not app.error
    table = app.dataframe[0].value
    assert list(table["method"]) == ["echo", "tp:1-2", "plain", "plain"]  # best first
    app.multiselect(key="q_methods").set_value(["echo"]).run()
    table = app.dataframe[0].value
    assert not app.exception and set(zip(table["variant"], table["method"], strict=True)) == {
        ("m", "echo"), ("minilm", "plain")
    }  # fmt: skip
    names = [trace["name"] for trace in json.loads(charts(app)[0].proto.spec)["data"]]
    assert "m · echo" in names and app.query_params["methods"] == "echo"  # one bar colour per model and method


def test_clustering_quality_shows_both_tracks_and_the_gain_chart(open_page, tmp_path):
    import json

    from core.data import LOCAL_TASKS, TRANSFER_TASKS

    def cell(variant: str, task: str, v: float) -> dict:
        return {
            "variant": variant, "prompt": {"name": "eol", "template": "{text}"}, "pooling": "last", "layer": "-1",
            "max_length": 128, "task": {"name": task, "texts": 10, "clusters": 2}, "kmeans": {"seeds": [42]},
            "scores": {"v_measure": v, "v_measure_std": 0.01}, "key": {"task": task},
        }  # fmt: skip

    rows = [("m", 0.30, 0.40), ("m+run", 0.36, 0.39), ("minilm", 0.35, 0.33)]
    for number, (variant, local, transfer) in enumerate(rows):
        for task in [*LOCAL_TASKS, *TRANSFER_TASKS]:
            folder = tmp_path / "cells" / task
            folder.mkdir(parents=True, exist_ok=True)
            v = local if task in LOCAL_TASKS else transfer
            (folder / f"{number}.json").write_text(json.dumps(cell(variant, task, v)))
    app = open_page("clustering_quality.py", adapter=False)
    app.text_input(key="q_folder").set_value(str(tmp_path)).run()
    assert not app.exception and not app.error
    table = app.dataframe[0].value
    adapter = table[table["variant"] == "m+run"].iloc[0]
    assert abs(adapter["local_average"] - 0.36) < 1e-9 and abs(adapter["transfer_average"] - 0.39) < 1e-9
    # The gain chart closes the grid's charts; the lens reports' layer profile follows it in its own section.
    gains = next(json.loads(c.proto.spec) for c in charts(app) if "In-domain gain" in c.proto.spec)
    assert gains["layout"]["title"]["text"].startswith("In-domain gain vs transfer gain")
    point = gains["data"][0]
    assert point["name"] == "m+run" and abs(point["x"][0] - 0.06) < 1e-9 and abs(point["y"][0] + 0.01) < 1e-9
