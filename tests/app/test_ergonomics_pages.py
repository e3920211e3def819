"""Issue 32 part 4 on the tiny model: the header's max length as a number, Embed & compare's upload, label bands,
sort by label and Stop, and the Adapters page's phases, Resume beside a stopped run, pre-launch pair check and the
learning rate's ± buttons."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import psutil
import pytest


def header_caption(app) -> str:
    return next(c.value for c in app.caption if c.value.startswith("Model **"))


def figure_specs(app) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in app.get("plotly_chart")]


def test_the_header_names_the_max_length_the_pages_use(open_page, tiny_adapter_dir, tmp_path):
    trained = tmp_path / "trained-at-48"
    shutil.copytree(tiny_adapter_dir, trained)
    (trained / "embedding_lens.json").write_text(json.dumps({"max_length": 48}))
    app = open_page("embed.py", adapter=False)
    assert "max length 512 tokens (default)" in header_caption(app)
    app.text_input(key="adapter_custom").set_value(str(trained)).run()
    assert not app.exception and "max length 48 tokens (the adapter's)" in header_caption(app)
    assert "adapter's (or 512)" not in header_caption(app)
    app.number_input(key="max_length").set_value(96).run()
    assert not app.exception and "max length 96 tokens (sidebar)" in header_caption(app)


def upload(app, name: str, data: bytes):
    app.radio(key="embed_source").set_value("upload a file").run()
    app.file_uploader(key="embed_upload_file").set_value((name, data, "text/plain")).run()
    return app


def test_embed_page_reads_an_uploaded_table_and_sorts_by_its_labels(open_page):
    rows = ["text,label", "a cat sleeps,animal", "the market fell,finance", "a dog barks,animal",
            "shares dropped,finance", "a bird sings,animal"]  # fmt: skip
    app = upload(open_page("embed.py"), "mine.csv", "\n".join(rows).encode())
    assert not app.exception and not app.error
    specs = figure_specs(app)
    assert len(specs) == 3  # base, adapter, difference
    # Sorted by label (the default with labels): animals 1, 3, 5, then finance 2, 4; axis names are the texts' own.
    assert specs[0]["data"][0]["x"] == ["1", "3", "5", "2", "4"]
    legend = [trace["name"] for trace in specs[0]["data"][1:]]
    assert legend == ["animal", "finance"]  # one band colour per label, named
    bands = [s for s in specs[0]["layout"]["shapes"] if s.get("yref") == "paper"]
    assert len(bands) == 2 and len({band["fillcolor"] for band in bands}) == 2
    assert any("Do texts with the same label" in s.value for s in app.subheader)
    assert any("Texts: mine.csv, 5, sorted by label" in c.value for c in app.caption)
    app.toggle(key="embed_sort").set_value(False).run()
    assert not app.exception and figure_specs(app)[0]["data"][0]["x"] == ["1", "2", "3", "4", "5"]
    bands = [s for s in figure_specs(app)[0]["layout"]["shapes"] if s.get("yref") == "paper"]
    assert len(bands) == 5  # unsorted, each text its own run


def test_embed_page_reads_a_text_file_and_names_a_bad_one(open_page):
    app = upload(open_page("embed.py"), "notes.txt", b"first line\n\nsecond line\nthird line\n")
    assert not app.exception and not app.error
    assert figure_specs(app)[0]["data"][0]["x"] == ["1", "2", "3"]
    assert not any(s.value.startswith("Do texts") for s in app.subheader)  # no labels in a .txt
    app = upload(open_page("embed.py"), "blank.txt", b"\n  \n")
    assert not app.exception and app.error and app.error[0].value.startswith("Cannot use blank.txt:")
    assert "one text per line" in app.error[0].value


def test_a_stopped_embedding_waits_for_embed_again(open_page):
    app = open_page("embed.py")
    inputs = app.session_state["embed_stopped:running"]  # what the Stop button would mark as stopped
    app.session_state["embed_stopped"] = inputs
    app.session_state["embed_vectors"] = {}
    app.run()
    assert not app.exception and not app.get("plotly_chart")
    assert any(w.value.startswith("Embedding stopped.") for w in app.warning)
    next(b for b in app.button if b.label == "Embed again").click().run()
    assert not app.exception and len(app.get("plotly_chart")) == 3


def adapters_page(output, **state):
    from streamlit.testing.v1 import AppTest

    from tests.conftest import PAGES_DIR

    app = AppTest.from_file(str(PAGES_DIR / "adapters.py"), default_timeout=60)
    for key, value in state.items():
        app.query_params[key] = value
    app.run()
    next(t for t in app.text_input if t.label.startswith("Output folder")).set_value(str(output))
    return app


def test_the_learning_rate_buttons_step_it(tmp_path, monkeypatch):
    import core.training.jobs as jobs

    started = []
    monkeypatch.setattr(jobs, "start_training", lambda folder, options: started.append(options))
    app = adapters_page(tmp_path)
    lr = app.number_input(key="train_lr")
    assert lr.step == pytest.approx(1e-4) and lr.value == pytest.approx(3e-4)
    assert lr.min < lr.value - lr.step and lr.value + lr.step < lr.max  # so both buttons are enabled
    lr.increment().increment().decrement()
    next(b for b in app.button if b.label == "Start training").click().run()
    assert not app.exception and len(started) == 1
    assert float(started[0][started[0].index("--lr") + 1]) == pytest.approx(4e-4)


def test_a_missing_pair_file_is_refused_on_the_page_and_leaves_no_folder(tmp_path):
    app = adapters_page(tmp_path)
    next(t for t in app.text_input if t.label.startswith("Name")).set_value("never-started")
    next(t for t in app.text_input if t.label.startswith("Pairs")).set_value(str(tmp_path / "gone.jsonl"))
    app.button[0].click().run()
    assert not app.exception
    assert app.error and "gone.jsonl does not exist" in app.error[0].value and "pair file" in app.error[0].value
    assert not (tmp_path / "never-started").exists()


def stopped_run(root, name: str = "stopped-run"):
    folder = root / name
    (folder / "checkpoints" / "step-000002").mkdir(parents=True)
    row = {"step": 2, "loss": 1.5, "pairs_per_s": 3.0, "peak_rss_mb": 100, "lr": 1e-4, "seconds": 1.0}
    (folder / "train_log.jsonl").write_text(json.dumps(row) + "\n")
    (folder / "job.json").write_text(json.dumps({"pid": 2**22 + 7, "settings": {"steps": 10}, "stopped": 1.0}))
    cli_words = "interrupted after step 2: checkpoint ...; continue with --resume"  # what the trainer logs
    (folder / "job.log").write_text(f"phase: training\n{cli_words}\n")
    return folder


def test_resume_sits_beside_a_stopped_run(tmp_path, monkeypatch):
    import core.training.jobs as jobs
    from workbench.state import TRAINED_DIR

    folder = stopped_run(TRAINED_DIR)
    resumed = []
    monkeypatch.setattr(jobs, "resume_training", lambda run: resumed.append(run))  # the page imports it per run
    app = adapters_page(tmp_path, watch=str(folder))
    assert not app.exception
    assert any(h.value == "stopped-run: stopped" for h in app.subheader)
    message = "Stopped after step 2 of 10; its checkpoint at step 2 is kept: Resume continues from there."
    assert [w.value for w in app.warning].count(message) == 2  # in the run's card and in the watched view
    assert not any("--resume" in w.value for w in app.warning)
    assert {"resume_" + str(folder), "watch_resume"} <= {b.key for b in app.button if b.label == "Resume"}
    app.button(key="watch_resume").click().run()
    assert not app.exception and resumed == [folder]
    shutil.rmtree(folder)


def test_a_running_job_shows_its_phase_not_step_0(tmp_path):
    from workbench.state import TRAINED_DIR

    folder = TRAINED_DIR / "loading-run"
    folder.mkdir(parents=True)
    stand_in = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "-m", "core.train", "--out",
                                 str(folder)])  # fmt: skip
    try:
        job = {"pid": stand_in.pid, "pid_started": psutil.Process(stand_in.pid).create_time(),
               "settings": {"steps": 20}, "started": time.time()}  # fmt: skip
        (folder / "job.json").write_text(json.dumps(job))
        (folder / "job.log").write_text("phase: starting\nphase: reading pairs\nphase: loading the model\n")
        app = adapters_page(tmp_path, watch=str(folder))
        assert not app.exception
        texts = [bar.proto.text for bar in app.get("progress")]
        assert texts and all(text.startswith("loading the model (") for text in texts)
        assert any(b.key == "watch_stop" for b in app.button)
    finally:
        stand_in.kill()
        stand_in.wait()
        shutil.rmtree(folder, ignore_errors=True)
