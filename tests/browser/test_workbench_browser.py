"""The workbench in a real browser: Debian's chromium, headless, driven by Playwright (no browser download).

Starts ``streamlit run workbench/app.py`` on a free port with the real default model and the shipped
adapter, opens every page of the navigation, operates one control on each, checks that no exception
box appears, saves screenshots (``build/browser/``, or ``$BROWSER_SCREENSHOTS``), and prints first-paint
and update times. Times are printed, not asserted: speed targets live in benchmark output.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = Path(os.environ.get("BROWSER_SCREENSHOTS", REPO / "build" / "browser"))
LONG_SENTENCE = (
    "After three weeks of heavy rain, the small mountain village finally reopened its only road, "
    "and the farmers drove their trucks full of apples down to the market in the valley town."
)  # 40 tokens with SmolLM2's tokenizer, prompt excluded


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    if not Path(CHROMIUM).is_file():
        message = "Debian's chromium is missing: run `make chromium` (apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "EMBEDDING_LENS_HOME": os.environ["EMBEDDING_LENS_USER_HOME"]}
    command = [sys.executable, "-m", "streamlit", "run", str(REPO / "workbench" / "app.py"), "--server.headless=true",
               "--server.address=127.0.0.1", f"--server.port={port}", "--browser.gatherUsageStats=false"]  # fmt: skip
    SHOTS.mkdir(parents=True, exist_ok=True)
    for prepare in (["core.models", "prepare", "smollm2-135m"], ["core.data", "prepare"]):  # what the pages read
        done = subprocess.run([sys.executable, "-m", *prepare], cwd=REPO, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
    with open(SHOTS / "streamlit.log", "wb") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    else:
        process.kill()
        pytest.fail("streamlit did not become healthy within 120 s")
    yield url
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def browser_page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
        )
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        yield page
        browser.close()


def wait_idle(page, timeout: float = 600.0) -> float:
    """Seconds until the script finished: the running indicator gone and stable for a moment."""
    started = time.perf_counter()
    page.wait_for_selector('[data-testid="stApp"]', timeout=timeout * 1000)
    quiet_since = None
    while time.perf_counter() - started < timeout:
        running = page.locator('[data-testid="stStatusWidget"]').count() > 0 or (
            page.locator('[data-testid="stSkeleton"]').count() > 0
        )
        if running:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.perf_counter()
        elif time.perf_counter() - quiet_since > 0.7:
            return quiet_since - started
        time.sleep(0.1)
    raise AssertionError(f"page still running after {timeout} s")


def first_paint(page, url: str) -> tuple[float, float]:
    """(seconds to the page's title, seconds until the script finished) for a fresh navigation."""
    started = time.perf_counter()
    page.goto(url)
    page.wait_for_selector('[data-testid="stMainBlockContainer"] h1', timeout=600_000)
    painted = time.perf_counter() - started
    return painted, painted + wait_idle(page)


def _type(label: str, value: str) -> Callable:
    def act(page) -> None:
        box = page.get_by_role("textbox", name=label, exact=True)
        box.fill(value)
        box.press("Enter")

    return act


def _click_text(text: str) -> Callable:
    return lambda page: page.get_by_text(text, exact=True).first.click()


def _click_button(name: str) -> Callable:
    return lambda page: page.get_by_role("button", name=name).click()


# One control per page (file name -> action); a new page only needs a line here.
ACTIONS: dict[str, Callable] = {
    "overview.py": _click_text("Models, prompts and pooling modes"),
    "embed.py": _type("Layer", "last4"),
    "attention.py": _type("Sentence", LONG_SENTENCE),
    "cluster_explorer.py": lambda page: (_click_text("UMAP and colouring")(page), _click_text("k-means")(page)),
    "clustering_quality.py": _type("Results folder", str(REPO / "results" / "local-track")),
    "attribution.py": _click_button("Attribute"),
    "adapters.py": _click_text("smollm2-135m-embed: finished"),
}


def url_path(file_name: str) -> str:
    return "" if file_name == "overview.py" else Path(file_name).stem  # st.Page's default: the file's stem


def test_every_page_paints_and_its_control_works(server, browser_page):
    from workbench.state import PAGE_FILES  # the navigation is the list of pages

    page = browser_page
    rows = []
    # Warm-up: the first model page loads SmolLM2 and the adapter once per server process.
    _, load_seconds = first_paint(page, f"{server}/embed")
    for name, title, _icon in PAGE_FILES:
        assert name in ACTIONS, f"add a control for {name} to ACTIONS"
        painted, finished = first_paint(page, f"{server}/{url_path(name)}")
        assert page.locator('[data-testid="stException"]').count() == 0, f"{title}: exception on load"
        started = time.perf_counter()
        ACTIONS[name](page)
        time.sleep(0.3)  # let the rerun start
        updated = time.perf_counter() - started + wait_idle(page)
        exceptions = page.locator('[data-testid="stException"]')
        page.screenshot(path=str(SHOTS / f"{Path(name).stem}.png"), full_page=True)
        assert exceptions.count() == 0, f"{title}: {exceptions.first.inner_text()[:500]}"
        rows.append((title, painted, finished, updated))
    print(f"\nmodel load + first page (cold): {load_seconds:.1f} s")
    print(f"{'page':<22}{'first paint s':>15}{'script done s':>15}{'after control s':>17}")
    for title, painted, finished, updated in rows:
        print(f"{title:<22}{painted:>15.2f}{finished:>15.2f}{updated:>17.2f}")
    print(f"screenshots: {SHOTS}")
