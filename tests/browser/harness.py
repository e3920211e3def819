"""What every browser test shares: the workbench served by ``streamlit run`` on a free loopback port, Debian's
chromium driven by Playwright, and CPU-bound neighbours for tests that must hold on a loaded machine.

Each test module builds its module-scoped fixtures from these context managers with its own log name, waits and
extra preparation, so one server and one browser serve all of a module's tests.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

__all__ = [
    "CHROMIUM",
    "REPO",
    "SHOTS",
    "busy_machine",
    "chromium_page",
    "fresh_page",
    "main_text",
    "problems",
    "stuck_page_report",
    "workbench_server",
]

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else (shutil.which("chromium") or "")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
SHOTS = Path(os.environ.get("BROWSER_SCREENSHOTS", REPO / "build" / "browser"))
BURNER = "import time\nwhile True:\n    sum(i * i for i in range(10_000))\n"
VIEWPORT = {"width": 1500, "height": 1100}
_CONSOLE: dict[object, list[str]] = {}  # per page: its console messages and uncaught errors, for stuck_page_report


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def workbench_server(
    log_name: str,
    *,
    prepare: Sequence[Sequence[str]] = (("core.models", "prepare", "smollm2-135m"),),
    healthy_within: float = 120.0,
) -> Iterator[str]:
    """``streamlit run workbench/app.py`` on 127.0.0.1 (the real default model): yields its URL, stops it after.

    Args:
        log_name: file under ``SHOTS`` that receives the server's output.
        prepare: ``python -m`` commands run first (what the pages read), each must exit 0.
        healthy_within: seconds the health endpoint may take to answer before the test fails.

    Fails under CI (skips elsewhere) when Debian's chromium is missing, naming the command that installs it.
    """
    if not CHROMIUM:
        message = "Debian's chromium is missing: run `make chromium` (or: sudo apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "EMBEDDING_LENS_HOME": os.environ["EMBEDDING_LENS_USER_HOME"]}
    for command in prepare:
        done = subprocess.run([sys.executable, "-m", *command], cwd=REPO, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
    port = _free_port()
    command = [sys.executable, "-m", "streamlit", "run", str(REPO / "workbench" / "app.py"), "--server.headless=true",
               "--server.address=127.0.0.1", f"--server.port={port}", "--browser.gatherUsageStats=false",
               "--server.fileWatcherType=none"]  # fmt: skip
    SHOTS.mkdir(parents=True, exist_ok=True)
    log_path = SHOTS / log_name
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + healthy_within
    while time.time() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    else:
        process.kill()
        pytest.fail(f"streamlit did not become healthy within {healthy_within:.0f} s; see {log_path}")
    try:
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def _launch(browser_type):
    """Debian's chromium, headless, with the harness's arguments."""
    return browser_type.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


@contextmanager
def chromium_page(default_timeout_ms: int = 60_000):
    """A headless chromium page (1500 x 1100) whose waits default to ``default_timeout_ms``."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = _launch(playwright.chromium)
        try:
            yield fresh_page(browser, default_timeout_ms)
        finally:
            browser.close()
            _CONSOLE.clear()


def fresh_page(browser, default_timeout_ms: int = 60_000, *, relaunch: bool = False):
    """A page in a new browser context of ``browser`` (its own cookies and storage: a new user's tab), or with
    ``relaunch`` in a new chromium process started the same way (closed when the Playwright session ends); its
    console messages and uncaught errors are recorded for :func:`stuck_page_report`."""
    if relaunch:
        browser = _launch(browser.browser_type)
    page = browser.new_context(viewport=VIEWPORT).new_page()
    page.set_default_timeout(default_timeout_ms)
    messages = _CONSOLE.setdefault(page, [])
    page.on("console", lambda message: messages.append(f"{message.type}: {message.text}"[:500]))
    page.on("pageerror", lambda error: messages.append(f"uncaught: {error}"[:500]))
    return page


@contextmanager
def busy_machine(processes: int = 2) -> Iterator[None]:
    """``processes`` CPU-bound Python processes running beside the test until the block ends."""
    burners = [subprocess.Popen([sys.executable, "-c", BURNER]) for _ in range(processes)]
    try:
        yield
    finally:
        for burner in burners:
            burner.terminate()
            burner.wait(timeout=30)


def problems(page, limit: int = 500) -> list[str]:
    """The text of every exception box and error alert on the page (each cut to ``limit`` characters)."""
    boxes = page.locator('[data-testid="stException"], [data-testid="stAlertContentError"]')
    return [boxes.nth(i).inner_text()[:limit] for i in range(boxes.count())]


def main_text(page) -> str:
    """The text of the page's main area (what a reader sees, the sidebar left out)."""
    return page.locator('[data-testid="stMain"]').inner_text()


def stuck_page_report(page, log_name: str, shot: str) -> str:
    """What a page that never showed an awaited element looked like: its URL, the start of its text, its last
    console messages and the tail of the server's log ``log_name``; a screenshot goes to ``SHOTS / shot``."""
    # Bounded waits, each failure said in the report: a hung renderer must not hang or hide the report.
    try:
        body = page.locator("body").inner_text(timeout=30_000)
    except Exception as error:
        body = f"(page text unreadable: {str(error)[:300]})"
    try:
        page.screenshot(path=str(SHOTS / shot), full_page=True, timeout=30_000)
    except Exception as error:
        shot = f"{shot} not taken: {str(error)[:300]}"
    log_path = SHOTS / log_name
    log = log_path.read_text(errors="replace")[-3000:] if log_path.is_file() else "(no server log)"
    console = "\n".join(_CONSOLE.get(page, [])[-20:]) or "(none)"
    return (
        f"url: {page.url}\npage text: {body[:1500]!r}\nconsole (last 20):\n{console}\n"
        f"server log tail ({log_path}):\n{log}\nscreenshot: {SHOTS / shot}"
    )
