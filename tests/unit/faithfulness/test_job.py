"""The attribution job on the tiny model: progress per part, cache hits by inputs, Stop, a stale heartbeat, IG
gating, and the background process the page launches."""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import replace

import pytest

from analysis.attribution.integrated_gradients import Attributor
from analysis.faithfulness import job as attribution_job
from analysis.faithfulness.job import (
    AttributionRequest,
    job_folder,
    job_running,
    launch,
    load_part,
    read_status,
    request_stop,
    run_job,
    touch_heartbeat,
)
from core.encoding.encoder import Encoder
from core.encoding.setting import EmbeddingSetting
from core.models.registry import load_model
from core.runtime.errors import ConfigError

TEXT_A = "The red dog runs in the garden."
TEXT_B = "A cat sleeps near the river."


@pytest.fixture(scope="module")
def encoder(tiny_model_dir, tiny_adapter_dir) -> Encoder:
    loaded = load_model(str(tiny_model_dir), tiny_adapter_dir)
    return Encoder(loaded, prompt="eol", pooling="last", cache=False, precision="fp32")


@pytest.fixture
def request_(tiny_model_dir, tiny_adapter_dir) -> AttributionRequest:
    setting = EmbeddingSetting.resolve(None, prompt="eol", pooling="last")
    return AttributionRequest(str(tiny_model_dir), str(tiny_adapter_dir), setting, TEXT_A, TEXT_B, max_steps=32)


@pytest.fixture
def folder(tmp_path, request_):
    path = job_folder(request_, tmp_path)
    path.mkdir(parents=True)
    touch_heartbeat(path)
    return path


def recording(monkeypatch, then=None) -> list[tuple]:
    """Every progress report (part, done, total, eta) as the job makes it; ``then(count)`` runs after each."""
    reports: list[tuple] = []
    real = attribution_job._Progress.report

    def report(self, part, done, total, unit, units_done=None):
        reports.append((part, done, total))
        self.status.setdefault("etas", []).append(self.status.get("eta_s"))
        if then is not None:
            then(self, len(reports))
        real(self, part, done, total, unit, units_done)
        reports[-1] = (*reports[-1], self.status.get("eta_s"))

    monkeypatch.setattr(attribution_job._Progress, "report", report)
    return reports


def test_the_job_reports_each_part_and_an_eta_then_keeps_every_result(monkeypatch, encoder, request_, folder):
    reports = recording(monkeypatch)
    status = run_job(folder, request_, encoder=encoder)
    assert status["state"] == "finished" and status["eta_s"] == 0.0
    assert [p for p in dict.fromkeys(r[0] for r in reports)] == ["ig_base", "ig_adapter", "pairs", "curves"]
    for part in ("ig_base", "ig_adapter", "pairs", "curves"):
        mine = [r for r in reports if r[0] == part]
        assert mine[0][1] == 0 and mine[-1][1] <= mine[-1][2] and len(mine) >= 2  # from 0, more than one report
        assert [r[1] for r in mine] == sorted(r[1] for r in mine)  # never backwards
        assert status["parts"][part]["state"] == "done" and status["parts"][part]["seconds"] >= 0
        assert load_part(folder, part) is not None
    etas = [r[3] for r in reports if r[3] is not None]
    assert etas and all(e >= 0 for e in etas)  # measured after the first work, never negative
    assert reports[-1][3] == 0.0  # the last report: nothing left
    assert read_status(folder)["state"] == "finished" and not job_running(folder)
    ig = load_part(folder, "ig_base")
    assert ig["a"]["steps"] <= request_.max_steps and ig["b"]["steps"] <= request_.max_steps
    assert set(load_part(folder, "curves")) == {"A", "B"} and set(load_part(folder, "pairs")) == {"base", "adapter"}


def test_the_same_inputs_are_a_cache_hit_and_other_inputs_are_not(monkeypatch, encoder, request_, folder):
    assert run_job(folder, request_, encoder=encoder)["state"] == "finished"

    def refuse(*args, **kwargs):
        raise AssertionError("a cached part ran again")

    monkeypatch.setattr(Attributor, "similarity", refuse)
    monkeypatch.setattr(attribution_job, "pair_curves", refuse)
    again = run_job(folder, request_, encoder=encoder)
    assert again["state"] == "finished" and {p["state"] for p in again["parts"].values()} == {"cached"}
    assert job_folder(replace(request_, device="cpu", after_unconverged="stop")) == job_folder(request_)
    for changed in (
        replace(request_, text_a="The red dog sleeps."),
        replace(request_, max_steps=64),
        replace(request_, setting=EmbeddingSetting.resolve(None, prompt="eol", pooling="mean")),
        replace(request_, identity={"adapter": {"adapter_sha256": "another"}}),
    ):
        assert changed.key() != request_.key()


def test_stop_ends_the_work_between_reports_and_keeps_finished_parts(monkeypatch, encoder, request_, folder):
    def stop_in_the_pairs(progress, count):
        if progress.status["parts"]["pairs"]["state"] == "running":
            request_stop(folder)

    recording(monkeypatch, stop_in_the_pairs)
    status = run_job(folder, request_, encoder=encoder)
    assert status["state"] == "stopped" and status["message"] == "stopped"
    assert load_part(folder, "ig_base") and load_part(folder, "ig_adapter")  # finished before the Stop: kept
    assert load_part(folder, "pairs") is None and load_part(folder, "curves") is None
    (folder / attribution_job.STOP_FILE).unlink()  # what launch does before starting again
    monkeypatch.undo()
    resumed = run_job(folder, request_, encoder=encoder)
    assert resumed["state"] == "finished"
    assert resumed["parts"]["ig_base"]["state"] == "cached" and resumed["parts"]["pairs"]["state"] == "done"


def test_a_stale_heartbeat_ends_the_work(monkeypatch, encoder, request_, folder):
    def tab_closed(progress, count):
        if count == 2:  # after the first IG report: nobody touches the heartbeat any more
            old = time.time() - 120
            os.utime(folder / attribution_job.HEARTBEAT_FILE, (old, old))

    reports = recording(monkeypatch, tab_closed)
    status = run_job(folder, request_, encoder=encoder, stale_s=30)
    assert status["state"] == "stopped" and "no page watching" in status["message"]
    assert len(reports) == 2 and load_part(folder, "ig_base") is None


def test_unconverged_ig_holds_the_later_parts_or_labels_them(encoder, request_, tmp_path):
    strict = replace(request_, tolerance=1e-12, max_steps=4, after_unconverged="stop")
    folder = job_folder(strict, tmp_path)
    folder.mkdir(parents=True)
    touch_heartbeat(folder)
    status = run_job(folder, strict, encoder=encoder)
    assert status["state"] == "held" and status["ig"]["converged"] is False
    assert status["ig"]["deltas"]["base"]["steps_a"] <= 4 and "did not converge" in status["message"]
    assert load_part(folder, "ig_base") is not None  # IG ran and stopped at its first failure's setting
    assert load_part(folder, "pairs") is None and load_part(folder, "curves") is None
    assert status["parts"]["pairs"]["state"] == "held"
    labelled = run_job(folder, replace(strict, after_unconverged="label"), encoder=encoder)
    assert labelled["state"] == "finished" and labelled["ig"]["later_parts_unreliable"] is True
    assert load_part(folder, "curves") is not None and labelled["parts"]["ig_base"]["state"] == "cached"


def test_the_eta_counts_down_between_reports_and_says_when_it_is_past():
    status = {"eta_s": 40.0, "updated": 1000.0}
    assert attribution_job.eta_left(status, now=1010.0) == pytest.approx(30.0)
    assert attribution_job.eta_left(status, now=1020.0) == pytest.approx(20.0)  # no report since: still moving
    assert attribution_job.eta_left(status, now=1050.0) == pytest.approx(-10.0)
    assert attribution_job.eta_left({"eta_s": None, "updated": 1000.0}) is None


def test_the_request_is_validated_and_round_trips_through_json(request_):
    assert AttributionRequest.from_dict(json.loads(json.dumps(request_.to_dict()))) == request_
    with pytest.raises(ConfigError, match="two non-empty texts"):
        replace(request_, text_b=" ")
    with pytest.raises(ConfigError, match="at least 4 steps"):
        replace(request_, max_steps=2)
    with pytest.raises(ConfigError, match="has not"):
        AttributionRequest.from_dict({**request_.to_dict(), "command": ["rm", "-rf", "/"]})
    with pytest.raises(ConfigError, match="not an attribution request"):
        AttributionRequest.from_dict({"setting": "x"})


def test_the_watchdog_ends_the_process_on_stop_or_a_stale_heartbeat(folder):
    ended: list[str] = []
    thread = threading.Thread(target=attribution_job._watchdog, args=(folder, 30.0, ended.append), daemon=True)
    thread.start()
    time.sleep(1.5)
    assert not ended  # a fresh heartbeat, no Stop: it keeps watching
    request_stop(folder)
    thread.join(timeout=5)
    assert ended == ["stopped"]
    (folder / attribution_job.STOP_FILE).unlink()
    old = time.time() - 100
    os.utime(folder / attribution_job.HEARTBEAT_FILE, (old, old))
    attribution_job._watchdog(folder, 30.0, ended.append)
    assert "no page watching" in ended[-1]


@pytest.mark.slow
def test_launch_runs_the_job_in_a_background_process_that_a_stop_ends(request_, tmp_path):
    folder = launch(request_, tmp_path)
    assert job_running(folder)  # starting counts as running before the process takes the lock
    assert launch(request_, tmp_path) == folder  # a second tab watches the same job
    deadline = time.time() + 240
    while job_running(folder) and time.time() < deadline:
        touch_heartbeat(folder)
        time.sleep(0.5)
    status = read_status(folder)
    assert status["state"] == "finished", (folder / "job.log").read_text()[-2000:]
    assert all(load_part(folder, p) is not None for p in ("ig_base", "ig_adapter", "pairs", "curves"))
    longer = replace(request_, text_a="The red dog runs in the garden and barks at the moon all night long.")
    folder = launch(longer, tmp_path)
    while job_running(folder) and (read_status(folder) or {}).get("state") != "running" and time.time() < deadline:
        touch_heartbeat(folder)
        time.sleep(0.2)
    request_stop(folder)
    stop_deadline = time.time() + 30
    while job_running(folder) and time.time() < stop_deadline:
        time.sleep(0.2)
    assert not job_running(folder) and read_status(folder)["state"] == "stopped"
