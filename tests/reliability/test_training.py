"""Reliability cases of training (issue 16): interruptions and bad resumes of ``python -m core.train``.

Each test is one row of the README's reliability table (its ``Case``). The runs use the tiny Llama of
tests/conftest.py in subprocesses (one thread each, so weights compare bit for bit across processes).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tests.reliability.cases import Case, cases

REPO = Path(__file__).resolve().parents[2]
STEPS = 8

CTRL_C = Case(
    "train-sigint-resume",
    "Ctrl-C (SIGINT) to `core.train` mid-run, then the same command with `--resume`",
    "exit 130, `interrupted after step N: checkpoint ...; continue with --resume`",
    "the checkpoint of the last completed step; the resumed adapter equals an uninterrupted run's bit for bit",
    area="interrupt",
)
SIGKILL = Case(
    "train-sigkill-resume",
    "SIGKILL to `core.train` mid-run, then `--resume`",
    "the shell's `Killed`; the resume says `from step N`",
    "the last periodic checkpoint; the resumed adapter equals an uninterrupted run's bit for bit",
    area="interrupt",
)
CHANGED = Case(
    "train-resume-changed",
    "`core.train --resume` with changed hyperparameters, or after the pairs file changed",
    "`error: cannot resume ...: lr: checkpoint 0.01 vs now 0.02 ...` / `... is not the one trained on (sha256 ...)`,"
    " before the model loads",
    "checkpoints untouched, no adapter written",
)
TRUNCATED = Case(
    "train-truncated-checkpoint",
    "`core.train --resume` with the newest checkpoint truncated",
    "a warning naming the damaged checkpoint and the one resumed from",
    "the damaged one renamed `damaged-step-*`; the resumed adapter equals an uninterrupted run's bit for bit",
    area="storage",
)
IDENTICAL = Case(
    "train-identical-pairs",
    "`core.train` on sixteen identical pairs",
    "`error: only 1 usable pair(s) ... (dropped 15 duplicate pair(s) ...)`",
    "nothing written",
)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    words = ["the", "a", "man", "woman", "dog", "cat", "car", "drives", "runs", "red", "blue", "house", "city"]
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    rows = [{"anchor": f"{w} {v} runs", "positive": f"{v} {w} runs fast"} for w in words for v in words[:3]]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def command(tiny_model_dir: Path, pairs: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "core.train", "--out", str(out), "--pairs", str(pairs),
        "--base-model", str(tiny_model_dir), "--steps", str(STEPS), "--batch-size", "4", "--micro-batch-size", "3",
        "--lora-r", "2", "--lora-layers", "0", "--lora-dropout", "0.2", "--lr", "0.01", "--precision", "fp32",
        "--checkpoint-every", "2",
        "--no-progress", *extra,
    ]  # fmt: skip


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=900)


def logged_steps(out: Path) -> int:
    path = out / "train_log.jsonl"
    return len(path.read_text().splitlines()) if path.is_file() else 0


def start_and_signal(args: list[str], out: Path, sig: int, after_steps: int) -> subprocess.CompletedProcess:
    process = subprocess.Popen(args, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 600
        while logged_steps(out) < after_steps and process.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert process.poll() is None, "the run ended before the signal"
        process.send_signal(sig)
        stdout, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    return subprocess.CompletedProcess(args, process.returncode, stdout, stderr)


def weights(folder: Path) -> dict:
    return load_file(str(folder / "adapter_model.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    assert all((wa[k] == wb[k]).all() for k in wa), "weights differ"


@pytest.fixture(scope="module")
def reference(tiny_model_dir, pairs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference") / "adapter"
    result = run(command(tiny_model_dir, pairs, out))
    assert result.returncode == 0, result.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def interrupted(tiny_model_dir, pairs, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("interrupted") / "adapter"
    result = start_and_signal(command(tiny_model_dir, pairs, out), out, signal.SIGINT, after_steps=3)
    return out, result


def copy_of(folder: Path, tmp_path: Path) -> Path:
    shutil.copytree(folder, tmp_path / folder.name)
    return tmp_path / folder.name


@cases(CTRL_C)
def test_ctrl_c_then_resume_is_bit_identical(case, tiny_model_dir, pairs, reference, interrupted, tmp_path):
    """training: Ctrl-C mid-run, then --resume -> exit 130 naming the checkpoint -> resumed weights identical."""
    folder, result = interrupted
    assert result.returncode == 130, result.stderr[-2000:]
    assert "interrupted after step" in result.stderr and "--resume" in result.stderr
    out = copy_of(folder, tmp_path)
    resumed = run(command(tiny_model_dir, pairs, out, "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_weights(reference, out)
    assert [json.loads(x)["step"] for x in (out / "train_log.jsonl").read_text().splitlines()] == list(
        range(1, STEPS + 1)
    )


@cases(SIGKILL)
def test_sigkill_then_resume_is_bit_identical(case, tiny_model_dir, pairs, reference, tmp_path):
    """training: SIGKILL mid-run, then --resume -> resumes from the last periodic checkpoint -> weights identical."""
    out = tmp_path / "adapter"
    killed = start_and_signal(command(tiny_model_dir, pairs, out), out, signal.SIGKILL, after_steps=3)
    assert killed.returncode == -signal.SIGKILL
    resumed = run(command(tiny_model_dir, pairs, out, "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert re.search(r"from step [246] to 8", resumed.stdout), resumed.stdout
    assert_same_weights(reference, out)


@cases(CHANGED)
def test_resume_with_changed_settings_or_pairs_is_refused(case, tiny_model_dir, pairs, interrupted, tmp_path):
    """training: --resume with changed hyperparameters, or changed pairs -> exit 2 naming them -> nothing.

    Both are refused before the model loads: the refusal must not wait for a (16 s) model load.
    """
    folder, _ = interrupted
    out = copy_of(folder, tmp_path)
    before = sorted(p.name for p in (out / "checkpoints").iterdir())
    changed = run(command(tiny_model_dir, pairs, out, "--resume", "--lr", "0.02", "--temperature", "0.1"))
    assert changed.returncode == 2
    assert "lr: checkpoint 0.01 vs now 0.02" in changed.stderr
    assert "temperature: checkpoint 0.05 vs now 0.1" in changed.stderr
    edited = tmp_path / "pairs.jsonl"
    edited.write_text(pairs.read_text().replace("dog", "wolf"))
    moved = run(command(tiny_model_dir, edited, out, "--resume"))
    assert moved.returncode == 2 and "is not the one trained on" in moved.stderr and "sha256" in moved.stderr
    for result in (changed, moved):
        assert "error: cannot resume" in result.stderr and "Traceback" not in result.stderr
        assert "from step" not in result.stdout  # the run never started
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == before
    assert not (out / "adapter_model.safetensors").exists()


@cases(TRUNCATED)
def test_a_truncated_checkpoint_falls_back_to_the_older_one(
    case, tiny_model_dir, pairs, reference, interrupted, tmp_path
):
    """training: --resume with the newest checkpoint truncated -> a warning -> set aside, resumed from the older one."""
    folder, _ = interrupted
    out = copy_of(folder, tmp_path)
    newest = sorted((out / "checkpoints").glob("step-*"))[-1]
    target = newest / "adapter_model.safetensors"
    target.write_bytes(target.read_bytes()[:1000])
    resumed = run(command(tiny_model_dir, pairs, out, "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"damaged checkpoint(s) {newest.name}" in resumed.stderr and "Traceback" not in resumed.stderr
    assert list((out / "checkpoints").glob(f"damaged-{newest.name}-*"))
    assert_same_weights(reference, out)


@cases(IDENTICAL)
def test_sixteen_identical_pairs_are_refused(case, tiny_model_dir, tmp_path):
    """training: sixteen identical pairs -> exit 2 naming the 15 duplicates dropped -> nothing written."""
    same = tmp_path / "same.jsonl"
    same.write_text((json.dumps({"anchor": "the cat runs", "positive": "a cat runs"}) + "\n") * 16)
    out = tmp_path / "adapter"
    result = run(command(tiny_model_dir, same, out, "--batch-size", "16"))
    assert result.returncode == 2
    assert "error: only 1 usable pair(s)" in result.stderr and "15 duplicate pair(s)" in result.stderr
    assert not out.exists()


SIGHUP = Case(
    "train-sighup-resume",
    "SIGHUP to `core.train` mid-run (its terminal or ssh session closed), then the same command with `--resume`",
    "exit 130, `interrupted after step N: checkpoint ...; continue with --resume`",
    "the checkpoint of the last completed step; the resumed adapter equals an uninterrupted run's bit for bit",
    area="interrupt",
)
PICKLE = Case(
    "train-resume-pickle",
    "`core.train --resume` on a run folder whose checkpoints hold a planted `trainer_state.pt` (a pickle that writes "
    "a file when loaded): in place of the data-only state, or beside it",
    "in place: `error: .../trainer_state.pt (the pickle format of older versions) holds more than tensors and plain "
    "data, so it is not loaded: unpickling it could run code (...). Start fresh ...`, exit 2; beside it: the run "
    "resumes as usual",
    "the pickle's file never written (nothing from the folder is unpickled); the checkpoints untouched; the resumed "
    "adapter equals an uninterrupted run's bit for bit",
    area="security",
)
FINISHED = Case(
    "train-out-finished-adapter",
    "`core.train --out` into a finished adapter (adapter files, no `checkpoints/`: what `make adapter` leaves)",
    "`error: ... holds a finished adapter: training into it would overwrite it and mix two runs' logs. Choose a new "
    "--out, or pass --force to replace it`, exit 2, before the model loads",
    "the adapter untouched, byte for byte; with `--force` it is replaced and its log starts again at step 1",
)


@cases(SIGHUP)
def test_sighup_then_resume_is_bit_identical(case, tiny_model_dir, pairs, reference, tmp_path):
    """training: SIGHUP mid-run, then --resume -> exit 130 naming the checkpoint -> resumed weights identical."""
    out = tmp_path / "adapter"
    result = start_and_signal(command(tiny_model_dir, pairs, out), out, signal.SIGHUP, after_steps=3)
    assert result.returncode == 130, result.stderr[-2000:]
    assert "interrupted after step" in result.stderr and "--resume" in result.stderr
    stopped = [json.loads(x)["step"] for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert (out / "checkpoints" / f"step-{stopped[-1]:06d}").is_dir()  # the last completed step, not the last periodic
    resumed = run(command(tiny_model_dir, pairs, out, "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_weights(reference, out)


def plant_pickle(folder: Path, marker: Path) -> None:
    """A ``trainer_state.pt`` in torch's own format that writes ``marker`` if anything unpickles it (as
    ``torch.load(..., weights_only=False)`` did)."""
    import torch

    class Planted:
        def __reduce__(self):
            return (Path.write_text, (marker, "code from the run folder ran"))

    torch.save({"optimizer": Planted()}, folder / "trainer_state.pt")


@cases(PICKLE)
def test_a_planted_pickle_is_never_loaded(case, tiny_model_dir, pairs, reference, interrupted, tmp_path):
    folder, _ = interrupted
    marker = tmp_path / "ran.txt"
    old = copy_of(folder, tmp_path / "old")
    for step in (old / "checkpoints").glob("step-*"):
        (step / "trainer_state.safetensors").unlink()  # the older format: the pickle alone
        plant_pickle(step, marker)
    before = sorted(p.name for p in (old / "checkpoints").iterdir())
    refused = run(command(tiny_model_dir, pairs, old, "--resume"))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr[-2000:]
    assert "trainer_state.pt (the pickle format of older versions) holds more than tensors" in refused.stderr
    assert "Start fresh" in refused.stderr and "from step" not in refused.stdout
    assert sorted(p.name for p in (old / "checkpoints").iterdir()) == before
    assert not (old / "adapter_model.safetensors").exists()
    beside = copy_of(folder, tmp_path / "beside")
    for step in (beside / "checkpoints").glob("step-*"):
        plant_pickle(step, marker)
    resumed = run(command(tiny_model_dir, pairs, beside, "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert not marker.exists()
    assert_same_weights(reference, beside)


@cases(FINISHED)
def test_training_into_a_finished_adapter_is_refused_unless_forced(case, tiny_model_dir, pairs, reference, tmp_path):
    out = copy_of(reference, tmp_path)
    shutil.rmtree(out / "checkpoints", ignore_errors=True)  # what `make adapter` leaves
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    refused = run(command(tiny_model_dir, pairs, out))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr[-2000:]
    assert f"error: {out} holds a finished adapter" in refused.stderr and "--force" in refused.stderr
    assert "from step" not in refused.stdout  # refused before the model loaded
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    forced = run(command(tiny_model_dir, pairs, out, "--force"))
    assert forced.returncode == 0, forced.stderr[-2000:]
    assert [json.loads(x)["step"] for x in (out / "train_log.jsonl").read_text().splitlines()] == list(
        range(1, STEPS + 1)
    )
    assert_same_weights(reference, out)


# ----- two runs at once, a full disk, and the app's background jobs

TWO_RUNS = Case(
    "train-two-runs-one-out",
    "a second `core.train` into the `--out` of a run that is training",
    "the second: `error: --out ... is in use by another process writing into it right now: wait for it to end "
    "(or stop it), or choose another --out`, exit 2, before its model loads",
    "the first run's folder untouched by the second: its adapter equals an uninterrupted run's bit for bit",
    area="concurrency",
)
DISK_FULL = Case(
    "train-disk-full",
    "`core.train --out` on a disk that fills up after the first checkpoint, then `--resume` once there is room",
    "`error: cannot write ...: No space left on device (...). Free some space there (df -h ...) and continue with "
    "the same command plus --resume ...`, exit 2",
    "the checkpoints written before, intact (no half-written one); the resumed adapter equals an uninterrupted "
    "run's bit for bit",
    area="storage",
)
TWO_TABS = Case(
    "app-two-tabs-train",
    "the Adapters page's *Start training* in a second tab (or process) for a folder whose job is running",
    "`... already has a running job; stop it first or choose another folder` in the page",
    "the running job untouched: its adapter equals an uninterrupted run's bit for bit",
    area="concurrency",
)
SWITCH_MODEL = Case(
    "app-switch-model-during-job",
    "another model chosen in the sidebar (and a page embedding with it) while an Adapters-page job trains",
    "the page with the new model, no error; the Adapters page still shows the job, then `finished`",
    "the job's adapter equals an uninterrupted run's bit for bit",
    area="concurrency",
)


def start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(args, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, process: subprocess.Popen, what: str, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert process.poll() is None, f"the run ended before {what}: {(process.communicate()[1] or '')[-2000:]}"
        assert time.time() < deadline, f"no {what} in {timeout} s"
        time.sleep(0.1)


@cases(TWO_RUNS)
def test_a_second_run_into_the_same_out_is_refused(case, tiny_model_dir, pairs, reference, tmp_path):
    """The first run is paused (SIGSTOP) after a step so it is surely training while the second one starts."""
    out = tmp_path / "adapter"
    first = start(command(tiny_model_dir, pairs, out))
    try:
        wait_for(lambda: logged_steps(out) >= 1, first, "a first step")
        first.send_signal(signal.SIGSTOP)
        second = run(command(tiny_model_dir, pairs, out))
        first.send_signal(signal.SIGCONT)
        _, stderr = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
    assert second.returncode == 2 and "Traceback" not in second.stderr
    assert f"error: --out {out} is in use by another process writing into it right now" in second.stderr
    assert "from step" not in second.stdout  # refused before its model loaded
    assert first.returncode == 0, stderr[-2000:]
    assert_same_weights(reference, out)


@cases(DISK_FULL)
def test_a_full_disk_stops_training_with_its_checkpoints_intact(
    case, tiny_model_dir, pairs, reference, small_disk, tmp_path
):
    """The run is paused once its first checkpoint is on the (4 MB tmpfs) disk, the disk filled, the run resumed."""
    from tests.reliability.test_disk_full import fill

    out = small_disk / "adapter"
    process = start(command(tiny_model_dir, pairs, out))
    try:
        wait_for(lambda: (out / "checkpoints" / "step-000002").is_dir(), process, "a first checkpoint")
        process.send_signal(signal.SIGSTOP)
        filler = fill(small_disk)
        process.send_signal(signal.SIGCONT)
        _, stderr = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 2, stderr[-2000:]
    assert "Traceback" not in stderr
    assert re.search(r"error: cannot write .*: No space left on device .*the same command plus --resume", stderr)
    checkpoints = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert checkpoints and all(name.startswith("step-") for name in checkpoints), checkpoints  # no half-written one
    filler.unlink()
    resumed = run(command(tiny_model_dir, pairs, out, "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_weights(reference, out)


def adapters_page(watch: Path | None = None):
    from streamlit.testing.v1 import AppTest

    from tests.conftest import PAGES_DIR

    app = AppTest.from_file(str(PAGES_DIR / "adapters.py"), default_timeout=120)
    if watch is not None:
        app.query_params["watch"] = str(watch)
    return app.run()


def job_options(tiny_model_dir: Path, pairs: Path) -> list[str]:
    """The Adapters page's job options for the tiny model and pairs: ``command`` less ``python -m core.train --out``."""
    return command(tiny_model_dir, pairs, Path("unused"))[5:]


def wait_for_job(folder: Path, timeout: float = 600) -> str:
    from core.training.jobs import job_status

    deadline = time.time() + timeout
    while (state := job_status(folder).state) == "running":
        assert time.time() < deadline, f"the job in {folder} still runs after {timeout} s"
        time.sleep(0.2)
    return state


@cases(TWO_TABS)
def test_a_second_tab_cannot_start_a_running_job_again(case, tiny_model_dir, pairs, reference, tmp_path, monkeypatch):
    """The first tab's job (what its *Start training* launches) is paused while the second tab presses Start."""
    from core.training.jobs import start_training

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the job inherits it: one thread, as the reference ran
    folder = tmp_path / "runs" / "shared"
    job = start_training(folder, job_options(tiny_model_dir, pairs))
    try:
        job.send_signal(signal.SIGSTOP)
        app = adapters_page()
        form = {t.label.split(" ")[0]: t for t in app.text_input}
        form["Name"].set_value("shared")
        form["Output"].set_value(str(folder.parent))
        app.button[-1].click().run()  # the form's submit button: the page's last
        job.send_signal(signal.SIGCONT)
        assert not app.exception
        assert any(f"{folder} already has a running job; stop it first" in e.value for e in app.error), app.error
        assert job.wait(timeout=600) == 0
    finally:
        if job.poll() is None:
            job.kill()
    assert wait_for_job(folder) == "finished"
    assert_same_weights(reference, folder)


@cases(SWITCH_MODEL)
def test_switching_model_while_a_job_trains(case, tiny_model_dir, pairs, reference, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from core.training.jobs import start_training
    from tests.app.test_app import APP
    from tests.conftest import build_tiny_model
    from workbench.state import CUSTOM_MODEL, NO_ADAPTER, TRAINED_DIR

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    other_model = build_tiny_model(tmp_path / "other-model", seed=1)
    folder = TRAINED_DIR / "while-switching"
    job = start_training(folder, job_options(tiny_model_dir, pairs))
    try:
        wait_for(lambda: logged_steps(folder) >= 1, job, "the job's first step")
        app = AppTest.from_file(APP, default_timeout=120)
        app.session_state["model_pick"] = CUSTOM_MODEL
        app.session_state["model_custom"] = str(tiny_model_dir)
        app.session_state["adapter_pick"] = NO_ADAPTER
        app.run()
        app.switch_page("../pages/embed.py").run()
        assert not app.exception and not app.error
        app.text_input(key="model_custom").set_value(str(other_model)).run()  # the switch, mid-job
        assert not app.exception and not app.error
        assert str(other_model) in app.caption[0].value
        app.switch_page("../pages/adapters.py").run()
        assert not app.exception
        assert any(e.label in ("while-switching: running", "while-switching: finished") for e in app.expander)
        assert job.wait(timeout=600) == 0
    finally:
        if job.poll() is None:
            job.kill()
    assert wait_for_job(folder) == "finished"
    page = adapters_page()
    assert any(e.label == "while-switching: finished" for e in page.expander)
    assert_same_weights(reference, folder)
