"""Background training jobs on the tiny model: start, progress, finish, stop, refusal of a used folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
from safetensors.torch import load_file

from core.runtime.errors import ConfigError, TrainError
from core.training.cli import build_parser
from core.training.jobs import (
    TrainingRequest,
    adapter_label,
    can_resume,
    job_status,
    read_train_log,
    resume_training,
    start_training,
    stop_training,
    stopped_checkpoints,
)


def wait_for(predicate, timeout: float = 120.0) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError("timed out")


@pytest.fixture(scope="module")
def pair_file(tmp_path_factory):
    words = ["the", "a", "man", "woman", "dog", "cat", "car", "drives", "runs", "red", "blue", "house", "city"]
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    lines = [json.dumps({"anchor": f"{w} {v} runs", "positive": f"{v} {w} runs"}) for w in words for v in words[:4]]
    path.write_text("\n".join(lines) + "\n")
    return path


def options(tiny_model_dir, pair_file, steps: int) -> list[str]:
    return ["--pairs", str(pair_file), "--base-model", str(tiny_model_dir), "--steps", str(steps),
            "--batch-size", "4", "--lora-r", "2", "--lora-layers", "0", "--precision", "fp32",
            "--checkpoint-every", "1"]  # fmt: skip


def test_a_job_runs_to_its_adapter_and_reports_progress(tiny_model_dir, pair_file, tmp_path):
    folder = tmp_path / "run"
    process = start_training(folder, options(tiny_model_dir, pair_file, 3))
    assert job_status(folder).state in ("running", "finished")
    process.wait(timeout=180)
    status = job_status(folder)
    assert status.state == "finished", (folder / "job.log").read_text()[-2000:]
    assert status.steps_done == status.steps_total == 3 and status.fraction == 1.0
    assert [row["step"] for row in read_train_log(folder)] == [1, 2, 3]
    assert (folder / "adapter_model.safetensors").is_file()
    with pytest.raises(TrainError, match="already holds an adapter"):
        start_training(folder, options(tiny_model_dir, pair_file, 3))


def test_stop_keeps_a_checkpoint_and_a_failed_job_says_why(tiny_model_dir, pair_file, tmp_path):
    folder = tmp_path / "long"
    process = start_training(folder, options(tiny_model_dir, pair_file, 10_000))
    wait_for(lambda: len(read_train_log(folder)) >= 2)
    with pytest.raises(TrainError, match="running job"):
        start_training(folder, options(tiny_model_dir, pair_file, 3))
    stop_training(folder)
    process.wait(timeout=120)
    assert job_status(folder).state == "stopped"
    assert any((folder / "checkpoints").iterdir()) and can_resume(folder)  # resuming: the test below
    # The stopped run's checkpoints are adapters to pick (newest first), and one loads as the encoder's adapter.
    picked = stopped_checkpoints(tmp_path)
    assert picked and all(p.parent == folder / "checkpoints" for p in picked) and picked == sorted(picked)[::-1]
    assert adapter_label(picked[0]).startswith(f"long at step {int(picked[0].name.removeprefix('step-'))} (")
    from core.encoding.encoder import Encoder

    vectors = Encoder(str(tiny_model_dir), adapter=picked[0], cache=False).encode(["a man runs"], use_adapter=True)
    assert vectors.shape[0] == 1

    # The stopped run says what was kept and offers the page's Resume, not the CLI's flag.
    message = job_status(folder).message
    assert message.startswith("Stopped after step ") and "Resume continues" in message and "--resume" not in message

    broken = tmp_path / "broken"
    start_training(broken, ["--pairs", str(pair_file), "--base-model", str(tmp_path / "no-model")]).wait(120)
    status = job_status(broken)
    assert status.state == "failed" and "no-model" in status.message
    assert not can_resume(broken) and all(p.parent.parent != broken for p in stopped_checkpoints(tmp_path))
    with pytest.raises(TrainError, match="no checkpoint yet"):
        resume_training(broken)


def test_a_missing_pair_file_is_refused_before_a_job_starts(tiny_model_dir, tmp_path):
    for pairs, reason in ((tmp_path / "missing.jsonl", "does not exist"), (tmp_path, "is a folder")):
        folder = tmp_path / "runs" / "never"
        with pytest.raises(TrainError, match=reason) as refused:
            start_training(folder, ["--pairs", str(pairs), "--base-model", str(tiny_model_dir)])
        assert str(pairs) in str(refused.value) and "pair file" in str(refused.value)
        assert not folder.exists(), "a refused job leaves no folder behind"
    relative = "no/such/pairs.jsonl"  # the job reads relative paths from the repository: so does the check
    with pytest.raises(TrainError, match="does not exist"):
        start_training(tmp_path / "rel", ["--pairs", relative, "--base-model", str(tiny_model_dir)])
    assert not (tmp_path / "rel").exists()


def test_a_finished_job_logged_each_phase_in_order(tiny_model_dir, pair_file, tmp_path):
    folder = tmp_path / "phased"
    start_training(folder, options(tiny_model_dir, pair_file, 2)).wait(timeout=180)
    assert job_status(folder).state == "finished", (folder / "job.log").read_text()[-2000:]
    said = [line.removeprefix("phase: ") for line in (folder / "job.log").read_text().splitlines()
            if line.startswith("phase: ")]  # fmt: skip
    assert [p.split()[0] for p in said] == ["starting", "reading", "loading", "tokenizing", "training", "writing"]
    kept = next(line for line in (folder / "job.log").read_text().splitlines() if " pairs (" in line)
    assert said[3] == f"tokenizing {kept.split()[0]} pairs"  # the pairs kept after cleaning, as the CLI reports


def test_a_running_job_says_its_phase(tmp_path):
    """The phase of a running job: the last phase line of its log, a training step with the time left, its stop."""
    folder = tmp_path / "live"
    folder.mkdir()
    # A process whose command line is a core.train job on this folder (it only sleeps): job_status sees it running.
    stand_in = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "-m", "core.train", "--out",
                                 str(folder)])  # fmt: skip
    try:
        started = psutil.Process(stand_in.pid).create_time()
        job = {"pid": stand_in.pid, "pid_started": started, "settings": {"steps": 20}, "started": time.time() - 7}
        (folder / "job.json").write_text(json.dumps(job))
        (folder / "job.log").write_text("phase: starting\n")
        status = job_status(folder)
        assert (
            status.state == "running" and status.phase.startswith("starting (") and "s since the start" in status.phase
        )
        (folder / "job.log").write_text("phase: starting\nphase: reading pairs\nphase: loading the model\n")
        assert job_status(folder).phase.startswith("loading the model (")
        (folder / "job.log").write_text("phase: loading the model\nphase: training\n")
        assert job_status(folder).phase == "training step 1 of 20"
        rows = [{"step": i, "loss": 1.0, "seconds": 2.0} for i in (1, 2, 3)]
        (folder / "train_log.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
        status = job_status(folder)
        assert (status.steps_done, status.phase) == (3, "training step 4 of 20, about 34 s left")
        # A resume appends to the log: its own "starting" line ends the last run's phases.
        (folder / "job.log").write_text("phase: training\ninterrupted after step 3\nphase: starting\n")
        assert job_status(folder).phase.startswith("starting (")
        (folder / "job.json").write_text(json.dumps({**job, "stopped": time.time()}))
        assert job_status(folder).phase.startswith("stopping")
    finally:
        stand_in.kill()
        stand_in.wait()


def test_a_stopped_job_resumes_to_the_adapter_of_an_unstopped_one(tiny_model_dir, pair_file, tmp_path):
    """Stop (SIGINT at whatever point the job is: mid-step, saving, logging), resume: bit-identical weights."""
    # Dropout and micro-batches: the RNG draws of a step cut short must not leak into the checkpoint.
    settings = [*options(tiny_model_dir, pair_file, 12), "--lora-dropout", "0.2", "--micro-batch-size", "3"]
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    first = start_training(straight, settings)
    second = start_training(stopped, settings)
    try:
        wait_for(lambda: len(read_train_log(stopped)) >= 3)
    except AssertionError:
        first.kill(), second.kill()
        raise
    with pytest.raises(TrainError, match="running"):
        resume_training(stopped)
    stop_training(stopped)
    assert second.wait(timeout=120) == 130
    first.wait(timeout=600)
    assert job_status(stopped).state == "stopped" and job_status(straight).state == "finished"
    steps_at_stop = len(read_train_log(stopped))
    assert 3 <= steps_at_stop < 12, "the stop should land mid-run"
    assert resume_training(stopped).wait(timeout=600) == 0, (stopped / "job.log").read_text()[-2000:]
    assert job_status(stopped).state == "finished"
    assert [row["step"] for row in read_train_log(stopped)] == list(range(1, 13))
    a, b = load_file(str(straight / "adapter_model.safetensors")), load_file(str(stopped / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    with pytest.raises(TrainError, match="finished"):
        resume_training(stopped)
    with pytest.raises(TrainError, match="no training job"):
        resume_training(tmp_path / "nothing")


# ----- the Adapters page's request


def test_a_request_becomes_train_options_the_trainer_parses_back():
    request = TrainingRequest(
        "my-adapter", pairs="p.jsonl", prompt="cluster", steps=30, batch_size=8, lora_layers=4,
        base_model="gemma3-270m", device="cpu",
    )  # fmt: skip
    options = request.options()
    assert options == [
        "--pairs", "p.jsonl", "--prompt", "cluster", "--steps", "30", "--batch-size", "8",
        "--lora-layers", "4", "--lr", "0.0003", "--checkpoint-every", "10", "--base-model", "gemma3-270m",
        "--device", "cpu",
    ]  # fmt: skip
    args = build_parser().parse_args(["--out", "x", *options])
    assert (args.pairs, args.prompt, args.steps, args.batch_size, args.lora_layers) == ("p.jsonl", "cluster", 30, 8, 4)
    assert (args.lr, args.checkpoint_every, args.base_model, args.device) == (3e-4, 10, "gemma3-270m", "cpu")


def test_a_request_names_a_folder_under_the_root_and_refuses_paths(tmp_path):
    assert TrainingRequest("run_1.v2").folder(tmp_path) == tmp_path / "run_1.v2"
    for bad in ("", "../escape", "a/b", "..", ".", "with space", "x" * 65):
        with pytest.raises(ConfigError, match="letters, digits"):
            TrainingRequest(bad).folder(tmp_path)


def test_only_stopped_or_failed_runs_offer_their_checkpoints(tmp_path, tiny_adapter_dir):
    import shutil

    def run(name: str, job: dict | None, steps: tuple[int, ...], finished: bool = False):
        folder = tmp_path / name
        (folder / "checkpoints").mkdir(parents=True)
        (folder / "train_log.jsonl").write_text(json.dumps({"step": 1, "loss": 1.0}) + "\n")
        for step in steps:
            shutil.copytree(tiny_adapter_dir, folder / "checkpoints" / f"step-{step:06d}")
        (folder / "checkpoints" / "step-000009").mkdir()  # a checkpoint without adapter files is no choice
        if job is not None:
            (folder / "job.json").write_text(json.dumps(job))
        if finished:
            (folder / "card.json").write_text("{}")
        return folder

    gone = 2**22 + 11  # no such process
    stopped = run("stopped", {"pid": gone, "command": [], "stopped": 1.0}, (2, 4))
    failed = run("failed", {"pid": gone, "command": []}, (3,))
    run("finished", {"pid": gone, "command": []}, (5,), finished=True)
    running = tmp_path / "running"
    job = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "-m", "core.train", "--out", running])
    try:
        run("running", {"pid": job.pid, "pid_started": psutil.Process(job.pid).create_time(), "command": []}, (6,))
        assert job_status(running).state == "running"
        picked = stopped_checkpoints(tmp_path)
    finally:
        job.kill()
        job.wait()
    assert picked == [
        failed / "checkpoints" / "step-000003",
        stopped / "checkpoints" / "step-000004",
        stopped / "checkpoints" / "step-000002",
    ]
    assert adapter_label(tmp_path / "x") == str(tmp_path / "x")


# ----- the job record is data: a stale pid, a planted command, a damaged record


def _fake_run(folder, job) -> None:
    (folder / "checkpoints" / "step-000002").mkdir(parents=True)
    (folder / "train_log.jsonl").write_text(json.dumps({"step": 2, "loss": 1.0}) + "\n")
    (folder / "job.json").write_text(json.dumps(job) if isinstance(job, dict) else job)


def test_a_reused_pid_is_not_the_job_and_gets_no_signal(tmp_path):
    """After a reboot or a kill the record's pid may belong to another process: it is neither running nor stopped."""
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        folder = tmp_path / "run"
        _fake_run(folder, {"pid": stranger.pid, "settings": {"steps": 10}, "stopped": 1.0})
        assert job_status(folder).state == "stopped" and can_resume(folder)
        _fake_run(tmp_path / "live", {"pid": stranger.pid, "settings": {"steps": 10}})
        stop_training(tmp_path / "live")  # the stranger is not the job: it must survive this
        time.sleep(0.3)
        assert stranger.poll() is None
        assert job_status(tmp_path / "live").state == "stopped"
        # The pid of a process running core.train on this folder, but started after the job: still not the job.
        _fake_run(tmp_path / "late", {"pid": os.getpid(), "pid_started": 1.0, "settings": {}})
        assert job_status(tmp_path / "late").state == "failed"
    finally:
        stranger.send_signal(signal.SIGKILL)
        stranger.wait()


def test_resume_rebuilds_the_command_and_never_runs_the_records(tmp_path, tiny_model_dir, monkeypatch):
    launched, real_popen = [], subprocess.Popen

    def popen(command, **_):
        launched.append(command)
        return real_popen([sys.executable, "-c", "pass"])

    monkeypatch.setattr("core.training.jobs.subprocess.Popen", popen)
    planted = tmp_path / "planted"
    marker = tmp_path / "ran"
    command = [sys.executable, "-c", f"open({str(marker)!r}, 'w')", "-m", "core.train", "--steps", "5"]
    _fake_run(planted, {"pid": 2**22 + 3, "command": command, "stopped": 1.0})
    with pytest.raises(TrainError, match="the job record in"):
        resume_training(planted)
    assert not launched and not marker.exists()

    legacy = tmp_path / "legacy"
    old = ["/somewhere/python", "-m", "core.train", "--out", "/elsewhere", "--steps", "5", "--base-model",
           str(tiny_model_dir), "--no-progress"]  # fmt: skip
    _fake_run(legacy, {"pid": 2**22 + 3, "command": old, "stopped": 1.0})
    resume_training(legacy)
    assert launched[-1][:5] == [sys.executable, "-m", "core.train", "--out", str(legacy)]
    assert "/somewhere/python" not in launched[-1] and "/elsewhere" not in launched[-1]
    assert launched[-1][-1] == "--resume" and launched[-1][launched[-1].index("--steps") + 1] == "5"
    record = json.loads((legacy / "job.json").read_text())
    assert "command" not in record and record["settings"]["steps"] == 5 and record["pid_started"] > 0

    for bad in ({"settings": {"out": "/elsewhere"}}, {"settings": {"steps": "five"}}, {"settings": {"rm": "-rf"}}):
        folder = tmp_path / f"bad{len(launched)}{len(str(bad))}"
        _fake_run(folder, {"pid": 2**22 + 3, "stopped": 1.0, **bad})
        with pytest.raises(TrainError, match="job record"):
            resume_training(folder)
    with pytest.raises(TrainError, match="--out, --resume and --config are the job's to set"):
        start_training(tmp_path / "x", ["--steps", "3", "--ou", str(tmp_path / "elsewhere")])


def test_a_damaged_record_is_a_damaged_run(tmp_path):
    for name, content in (("cut", '{"pid": 12'), ("list", "[1, 2]"), ("nopid", '{"command": []}')):
        folder = tmp_path / name
        _fake_run(folder, content)
        status = job_status(folder)
        assert status.state == "damaged" and f"{folder / 'job.json'} is damaged" in status.message
        assert not can_resume(folder) and stopped_checkpoints(tmp_path) == []
        with pytest.raises(TrainError, match="is damaged"):
            resume_training(folder)
