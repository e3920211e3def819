"""Three ways in from outside: the app's network binding, code in a folder the user points at (a model's own
Python, a pickled adapter, a job record's command), and a pid that is no longer the job's. Plus the one rule for
the modes of the files the project leaves behind.

The app cases start ``streamlit run`` as a real process from a folder other than the repository and read the
listening sockets; the CLI cases run forked ``python -m`` processes (``tests/reliability/runner.py``).
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import psutil

from tests.reliability.cases import Case, cases
from tests.reliability.children import PACKAGED_NAME, register_tiny_gguf, write_tiny_gguf
from tests.reliability.test_inputs import SENTENCES

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "workbench" / "app.py"


def security(id: str, given: str, sees: str, kept: str, **data) -> Case:
    return Case(id, given, sees, kept, "security", data)


# ----- where the app listens


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def listening(pid: int, port: int, timeout: float = 90) -> set[str]:
    """The addresses process ``pid`` (or a child) listens on at ``port``, once it does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        processes = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        found = {
            c.laddr.ip
            for p in processes
            for c in p.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port
        }
        if found:
            return found
        time.sleep(0.3)
    raise AssertionError(f"nothing listened on port {port} within {timeout} s")


def start_app(folder: Path, port: int, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``streamlit run <repo>/workbench/app.py`` started from ``folder`` (not the repository), as a user would."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")}
    environment.update({"PYTHONPATH": str(REPO), **(env or {})})
    command = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(port)]
    log = (folder / f"app-{port}.log").open("w")
    return subprocess.Popen(command, cwd=folder, env=environment, stdout=log, stderr=subprocess.STDOUT)


@cases(
    security(
        "app-binding-any-folder",
        "`streamlit run <repo>/workbench/app.py` started from another folder (no --server.address)",
        "the app on http://localhost:PORT only",
        "a server listening on 127.0.0.1 alone (workbench/.streamlit/config.toml is read from any folder)",
        env=None,
        expect={"127.0.0.1"},
    ),
    security(
        "app-binding-chosen",
        "the app started with `STREAMLIT_SERVER_ADDRESS=0.0.0.0` (another address, chosen)",
        "every page opens with `The workbench listens on 0.0.0.0 (chosen by ...): anyone who can reach this machine "
        "can start training jobs and read files through it...`; the same line on the server's terminal",
        "a server on the chosen address, as asked",
        env={"STREAMLIT_SERVER_ADDRESS": "0.0.0.0"},
        expect={"0.0.0.0"},
    ),
)
def test_the_app_binds_to_loopback_however_it_is_started(case, tmp_path):
    port = free_port()
    server = start_app(tmp_path, port, case.data["env"])
    try:
        assert listening(server.pid, port) == case.data["expect"]
    finally:
        server.terminate()
        server.wait(timeout=30)


@cases(
    security(
        "app-binding-nobody",
        "the app listening on every interface with nobody having chosen it (its config file removed)",
        "`The workbench is listening on every network interface, which nobody chose ... it serves no page like "
        "this: restart it with ...` and no page",
        "nothing: no page runs, so nothing is started or read",
        address=None,
        where="<default>",
        level="refuse",
    ),
    security(
        "app-binding-warning-page",
        "a page of the app served on `--server.address 0.0.0.0`",
        "the page, under `The workbench listens on 0.0.0.0 (chosen by <user defined>): anyone who can reach ...`",
        "the pages work as on 127.0.0.1",
        address="0.0.0.0",
        where="<user defined>",
        level="warn",
    ),
)
def test_the_app_says_where_it_listens(case, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from workbench import serving

    # AppTest runs the script with no server (and patches streamlit's config): the server's answer is given here;
    # how it is read from the config is the case above, with a real server.
    chosen = serving.binding(case.data["address"], case.data["where"])
    monkeypatch.setattr(serving, "current_binding", lambda: chosen)
    app = AppTest.from_file(str(APP), default_timeout=120).run()
    assert not app.exception, app.exception
    if case.data["level"] == "refuse":
        assert "which nobody chose" in app.error[0].value and "--server.address 127.0.0.1" in app.error[0].value
        assert not app.markdown and not app.subheader  # the Overview page did not run
    else:
        assert app.warning[0].value.startswith("The workbench listens on 0.0.0.0 (chosen by <user defined>)")
        assert any(s.value == "Loaded" for s in app.subheader)  # the Overview page ran below the warning


# ----- code in a folder the user points at


def custom_code_model(tiny_model_dir: Path, folder: Path, marker: Path) -> Path:
    """The tiny model with ``auto_map`` pointing at a module of its own that leaves ``marker`` when run."""
    shutil.copytree(tiny_model_dir, folder)
    (folder / "modeling_custom.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "modeling_custom.Config", "AutoModelForCausalLM": "modeling_custom.Model"}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def pickled_adapter(tiny_adapter_dir: Path, folder: Path) -> Path:
    import torch
    from safetensors.torch import load_file

    shutil.copytree(tiny_adapter_dir, folder)
    torch.save(load_file(str(folder / "adapter_model.safetensors")), folder / "adapter_model.bin")
    (folder / "adapter_model.safetensors").unlink()
    return folder


@cases(
    security(
        "remote-code-model",
        "`core.embed --model FOLDER` whose config.json has `auto_map` (the folder's own Python)",
        "`error: Model ... ships its own Python code (config.json has auto_map: ...), which Embedding Lens does "
        "not run unless you ask: pass --trust-remote-code ...`, exit 2; no `[y/N]` prompt",
        "nothing: the folder's code never ran, no output",
        kind="model",
        pattern=r"error: Model .* ships its own Python code \(config\.json has auto_map: .*--trust-remote-code",
    ),
    security(
        "pickle-adapter",
        "`core.embed --adapter FOLDER` whose weights are only `adapter_model.bin` (a pickle)",
        "`error: Adapter ... has only adapter_model.bin, a pickle file: Embedding Lens does not load pickles ... "
        "Re-save the adapter as adapter_model.safetensors ...`, exit 2",
        "nothing: the pickle was never unpickled, no output",
        kind="adapter",
        pattern=r"error: Adapter .* has only adapter_model\.bin, a pickle file: .*adapter_model\.safetensors",
    ),
)
def test_code_in_a_folder_is_never_run(case, cli, tiny_model_dir, tiny_adapter_dir, tmp_path):
    marker = tmp_path / "code-ran"
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(SENTENCES) + "\n")
    output = tmp_path / "out" / "vectors.npy"
    if case.data["kind"] == "model":
        model, extra = custom_code_model(tiny_model_dir, tmp_path / "custom", marker), []
    else:
        model, extra = tiny_model_dir, ["--adapter", pickled_adapter(tiny_adapter_dir, tmp_path / "pickled")]
    run = cli("core.embed", "--model", model, *extra, "--input", texts, "--output", output)
    assert run.wait() == 2, run.stderr
    assert re.search(case.data["pattern"], run.stderr), run.stderr
    assert "Traceback" not in run.stderr and "[y/N]" not in run.stdout + run.stderr
    assert not marker.exists() and not output.exists()


def fake_run(folder: Path, job: dict) -> Path:
    """A stopped run of the app: a checkpoint, a log row and ``job``."""
    (folder / "checkpoints" / "step-000002").mkdir(parents=True)
    row = {"step": 2, "loss": 1.5, "pairs_per_s": 3.0, "peak_rss_mb": 100, "lr": 1e-4}
    (folder / "train_log.jsonl").write_text(json.dumps(row) + "\n")
    (folder / "job.json").write_text(json.dumps(job))
    return folder


@cases(
    security(
        "job-record-command",
        "a run folder whose `job.json` stores a command that runs other code, then *Resume* on the Adapters page",
        "`the job record in FOLDER: unrecognized arguments: ...` in the page",
        "the run's files as they were; the stored command never ran",
    ),
)
def test_resume_never_runs_the_command_a_job_record_stores(case, tmp_path):
    from streamlit.testing.v1 import AppTest

    from tests.conftest import PAGES_DIR
    from workbench.state import TRAINED_DIR

    marker = tmp_path / "code-ran"
    planted = [sys.executable, "-c", f"open({str(marker)!r}, 'w')", "-m", "core.train", "--steps", "5"]
    folder = fake_run(TRAINED_DIR / "planted-run", {"pid": 2**22 + 5, "command": planted, "stopped": 1.0})
    try:
        app = AppTest.from_file(str(PAGES_DIR / "adapters.py"), default_timeout=60).run()
        resume = next(b for b in app.button if b.key == f"resume_{folder}")
        resume.click().run()
        assert not app.exception
        assert any(f"the job record in {folder}: unrecognized arguments" in e.value for e in app.error), [
            e.value for e in app.error
        ]
        time.sleep(1)
        assert not marker.exists() and json.loads((folder / "job.json").read_text())["command"] == planted
    finally:
        shutil.rmtree(folder)


@cases(
    security(
        "stale-pid",
        "a run whose `job.json` pid now belongs to another process (after a reboot or a kill), then *Stop*",
        "the run shown as stopped (not running), with *Resume* offered",
        "the other process untouched (no signal sent); the run's checkpoints",
    ),
)
def test_a_stale_pid_is_not_the_job_and_gets_no_signal(case, tmp_path):
    from core.training.jobs import can_resume, job_status, stop_training

    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        started = psutil.Process(stranger.pid).create_time()
        folder = fake_run(tmp_path / "run", {"pid": stranger.pid, "pid_started": started - 60, "settings": {}})
        assert job_status(folder).state == "failed"  # neither running nor Resume refused
        stop_training(folder)
        time.sleep(0.5)
        assert stranger.poll() is None, "the other process got a signal"
        assert job_status(folder).state == "stopped" and can_resume(folder)
    finally:
        stranger.send_signal(signal.SIGKILL)
        stranger.wait()


# ----- one rule for file modes


def umask_and_register(umask: int, root: str) -> None:
    """In a forked run: the user's umask, and the tiny GGUF as a packaged model."""
    os.umask(umask)
    register_tiny_gguf(root)


@cases(
    security(
        "file-modes",
        "a model converted (`core.models prepare`) under umask 027",
        "nothing unusual",
        "the converted folder 0750 and every file in it 0640 (safetensors included): the umask's modes, as for "
        "every other file the project writes",
    ),
)
def test_files_follow_the_umask(case, cli, home, tiny_model_dir, tmp_path):
    root = tmp_path / "packages"
    write_tiny_gguf(tiny_model_dir, root)
    setup = functools.partial(umask_and_register, 0o027, str(root))
    run = cli("core.models", "prepare", PACKAGED_NAME, setup=setup)
    assert run.wait() == 0, run.stderr
    folder = home / "models" / PACKAGED_NAME
    assert stat.S_IMODE(folder.stat().st_mode) == 0o750
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}
    assert "model.safetensors" in modes and set(modes.values()) == {0o640}, modes
