"""The Attribution page on the tiny model: the job's results, the verdict table, progress and Stop, IG gating.

The page's background process is replaced by the same job run in this process (``run_job``), so the page finds
its results on its next run; the real process is tested in ``tests/unit/faithfulness/test_job.py``.
"""

from __future__ import annotations

import os

import pytest

from analysis.faithfulness import job as attribution_job
from core.runtime.files import lock_folder, write_json


def charts(app) -> list:
    return app.get("plotly_chart")


@pytest.fixture
def jobs(monkeypatch, tmp_path):
    """Jobs under ``tmp_path``, run in this process when the page launches one; the launched requests."""
    launched = []

    def launch_here(request, root=None, python=None):
        folder = attribution_job.job_folder(request)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / attribution_job.STOP_FILE).unlink(missing_ok=True)
        attribution_job.touch_heartbeat(folder)
        launched.append(request)
        attribution_job.run_job(folder, request)
        return folder

    monkeypatch.setattr(attribution_job, "jobs_root", lambda: tmp_path)
    monkeypatch.setattr(attribution_job, "launch", launch_here)
    return launched


def test_attribute_shows_ig_pairs_curves_and_the_verdict_table(open_page, jobs):
    app = open_page("attribution.py")
    assert not app.exception and not charts(app) and not jobs  # nothing runs before the click
    next(b for b in app.button if b.label == "Attribute").click().run()
    assert not app.exception and len(jobs) == 1
    assert all("did not converge" in e.value for e in app.error)  # the only error the default cap may bring
    assert [m.label for m in app.metric] == ["cosine (base)", "cosine (adapter)"]
    assert any(c.value.startswith(f"IG steps used (cap {jobs[0].max_steps} per text): base: A ") for c in app.caption)
    assert sum("token pairs that move it most" in m.value for m in app.markdown) == 2
    pair_figure = next(c for c in charts(app) if "Contributions of token pairs" in c.proto.spec)
    assert pair_figure.proto.spec.count('"showscale":true') == 3  # a colour bar on base, adapter, adapter - base
    table = app.dataframe[0].value
    assert set(table["text"]) == {"A", "B"} and set(table["setting"]) == {"base", "adapter"}
    assert "random" not in set(table["method"]) and (table.groupby(["text", "setting"])["rank"].min() == 1).all()
    assert table["random (mean ± SD, min-max)"].str.contains("±").all()
    # two IG bar charts, the pair matrices, and per text and setting an agreement heatmap and the curves
    assert len(charts(app)) == 3 + 2 * 4
    app.run()  # a rerun reads the results from disk: no new job
    assert not app.exception and len(jobs) == 1 and len(charts(app)) == 11
    app.text_input(key="attr_a").set_value("a woman rides a horse").run()
    assert not charts(app) and len(jobs) == 1  # other inputs: nothing shown as theirs, nothing started


def test_a_running_job_shows_each_part_the_eta_and_one_stop_button(open_page, jobs, monkeypatch):
    folders = []

    def start_only(request, root=None, python=None):  # a job that has started and reports, held by this test
        folder = attribution_job.job_folder(request)
        folder.mkdir(parents=True, exist_ok=True)
        parts = {
            "ig_base": {"label": "IG base", "state": "done", "done": 64, "total": 64, "unit": "IG steps"},
            "ig_adapter": {"label": "IG adapter", "state": "running", "done": 16, "total": 64, "unit": "IG steps"},
            "pairs": {"label": "token pairs", "state": "pending", "done": 0, "total": 0},
            "curves": {"label": "deletion curves", "state": "pending", "done": 0, "total": 0},
        }
        write_json(folder / "status.json", {"state": "running", "eta_s": 40.0, "updated": 1e12, "parts": parts})
        folders.append((folder, lock_folder(folder, "test")))
        return folder

    monkeypatch.setattr(attribution_job, "launch", start_only)
    app = open_page("attribution.py")
    try:
        next(b for b in app.button if b.label == "Attribute").click().run()
        assert not app.exception
        texts = [p.proto.text for p in app.get("progress")]
        assert texts[:2] == ["IG base: done", "IG adapter: 16 of 64 IG steps"]
        assert texts[2:] == ["token pairs: waiting", "deletion curves: waiting"]
        assert any("s left" in c.value for c in app.caption)
        stops = [b for b in app.button if b.label == "Stop"]
        assert len(stops) == 1 and not any(b.label == "Attribute" for b in app.button)
        stops[0].click().run()
        folder = folders[0][0]
        assert (folder / attribution_job.STOP_FILE).is_file()
        assert (folder / attribution_job.HEARTBEAT_FILE).is_file()  # the watching page keeps the job alive
    finally:
        for _, descriptor in folders:
            os.close(descriptor)


def test_a_stopped_job_says_so_and_attribute_continues_it(open_page, jobs, monkeypatch):
    real = attribution_job.launch

    def stopped_at_once(request, root=None, python=None):
        folder = attribution_job.job_folder(request)
        folder.mkdir(parents=True, exist_ok=True)
        attribution_job.request_stop(folder)
        attribution_job.run_job(folder, request)
        return folder

    monkeypatch.setattr(attribution_job, "launch", stopped_at_once)
    app = open_page("attribution.py")
    next(b for b in app.button if b.label == "Attribute").click().run()
    assert not app.exception and not charts(app) and "Attribution stopped (stopped)" in app.warning[0].value
    monkeypatch.setattr(attribution_job, "launch", real)
    app.run()  # a button's callback is the one of the run that drew it
    next(b for b in app.button if b.label.startswith("Attribute")).click().run()
    assert not app.exception and not any("stopped" in w.value for w in app.warning) and len(charts(app)) == 11


def test_unconverged_ig_is_said_and_the_hold_offers_the_rest_labelled(open_page, jobs, monkeypatch):
    from dataclasses import replace

    def strict(request, root=None, python=None):  # no IG converges to this tolerance
        folder = attribution_job.job_folder(request)
        folder.mkdir(parents=True, exist_ok=True)
        attribution_job.touch_heartbeat(folder)
        jobs.append(request)
        attribution_job.run_job(folder, replace(request, tolerance=1e-12))
        return folder

    monkeypatch.setattr(attribution_job, "launch", strict)
    app = open_page("attribution.py")
    app.checkbox[0].check().run()
    next(b for b in app.button if b.label == "Attribute").click().run()
    assert not app.exception and "did not converge" in app.error[0].value
    assert "held back" in app.warning[0].value and len(charts(app)) == 2  # the IG bars only
    next(b for b in app.button if b.label.startswith("Run token pairs and curves anyway")).click().run()
    assert not app.exception and "did not converge" in app.error[0].value
    assert "unreliable" in app.warning[0].value and len(charts(app)) == 11
    assert jobs[-1].after_unconverged == "label"
