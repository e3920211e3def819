"""Issue 32 part 4 in a real browser (Debian's chromium, headless, Playwright; the server and browser of
``tests.browser.harness``): the header names the max length as a number, and a training run started, stopped
and resumed on the Adapters page says its phase, and after Stop offers Resume beside the run.

Waits are on visible states with generous limits (never fixed sleeps), so the test holds on a loaded machine
(two other CPU-bound processes beside it).
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser.harness import chromium_page, main_text, problems, workbench_server

pytestmark = [pytest.mark.browser, pytest.mark.integration]

SLOW_MS = 600_000  # a model load or a stop under load: generous, the state is what is awaited


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with workbench_server("streamlit-ergonomics.log") as url:
        yield url


@pytest.fixture(scope="module")
def browser_page(server):
    with chromium_page() as page:
        yield page


def test_the_header_shows_the_adapters_max_length(server, browser_page):
    page = browser_page
    page.goto(f"{server}/embed", wait_until="commit")
    caption = page.locator('[data-testid="stCaptionContainer"]', has_text="max length").first
    caption.wait_for(state="visible", timeout=SLOW_MS)
    words = caption.inner_text()
    # The shipped SmolLM2 adapter (the sidebar's first choice) was trained at 64 tokens.
    assert "max length 64 tokens (the adapter's)" in words and "(or 512)" not in words, words


def test_embedding_shows_batches_and_stops(server, browser_page):
    """Echo on 60 new texts (not in the disk cache): batches with the time left, Stop, then Embed again."""
    page = browser_page
    page.goto(f"{server}/embed", wait_until="commit")
    page.get_by_role("textbox", name="Labels, one per line (optional)").wait_for(timeout=SLOW_MS)
    page.get_by_role("combobox", name="Method", exact=True).click()
    page.get_by_role("option", name="echo", exact=True).click()
    page.keyboard.press("Escape")
    page.locator('[data-testid="stPlotlyChart"]').nth(2).wait_for(timeout=SLOW_MS)  # the six examples under echo
    page.get_by_role("textbox", name="Labels, one per line (optional)").fill("")
    run = time.time_ns()  # new texts on every run, so nothing comes from the cache of an earlier one
    texts = "\n".join(f"sentence {i} of run {run} is about topic {i % 7}" for i in range(60))
    box = page.get_by_role("textbox", name="Texts, one per line")
    box.fill(texts)
    box.press("Control+Enter")  # a text area sends its value on Ctrl+Enter (or when it loses focus)
    bar = page.locator('[data-testid="stProgress"]', has_text="batches").first
    bar.wait_for(timeout=SLOW_MS)
    page.wait_for_function(
        """() => [...document.querySelectorAll('[data-testid="stProgress"]')]
                 .some(e => /Embedding 60 texts .*: [1-9]\\d* of 8 batches, about \\d+ s left/.test(e.innerText))""",
        timeout=SLOW_MS,
    )
    page.locator(".st-key-embed_stopped_button button").click()
    page.locator('[data-testid="stAlertContentWarning"]', has_text="Embedding stopped.").wait_for(timeout=SLOW_MS)
    assert not page.locator('[data-testid="stPlotlyChart"]').count()
    page.get_by_role("button", name="Embed again", exact=True).click()
    from playwright.sync_api import TimeoutError as WaitTimeout

    try:
        page.locator('[data-testid="stPlotlyChart"]').nth(2).wait_for(timeout=SLOW_MS)  # base, adapter, difference
    except WaitTimeout as error:  # say what the page shows instead: a wait alone names only the chart it missed
        raise AssertionError(f"no charts after Embed again; the page shows:\n{main_text(page)[:3000]}") from error
    assert not problems(page), problems(page)


def progress_text(page) -> str:
    bars = page.locator('[data-testid="stProgress"]')
    return bars.first.inner_text() if bars.count() else ""


def wait_for_step(page, at_least: int, seen: set[str]) -> None:
    """Poll the live view's progress text (a fragment that redraws every 2 s) until a training step past
    ``at_least`` - 1 completed steps shows; every phase shown on the way is added to ``seen``."""
    deadline = time.time() + SLOW_MS / 1000
    while time.time() < deadline:
        text = progress_text(page)
        if text:
            seen.add(re.sub(r" \(\d+ s since the start\)", "", text))
        step = re.match(r"training step (\d+) of", text)
        if step and int(step.group(1)) > at_least:
            return
        page.wait_for_timeout(300)  # a poll interval, not a wait for a state: the loop's deadline bounds it
    raise AssertionError(f"no training step {at_least + 1} within {SLOW_MS / 1000} s; phases seen: {sorted(seen)}")


def stop_job(folder: Path) -> None:
    """Teardown: the job this test started through the page, if it still runs (its pid from its record)."""
    try:
        pid = json.loads((folder / "job.json").read_text())["pid"]
        os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError, KeyError):
        pass


def test_a_stopped_run_offers_resume_beside_it(server, browser_page, tmp_path):
    page = browser_page
    words = ["the", "a", "man", "woman", "dog", "cat", "car", "house", "city", "red", "blue", "green"]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"anchor": f"{w} {v} runs", "positive": f"{v} {w} runs"}) + "\n"
                             for w in words for v in words[:3]))  # fmt: skip
    folder = tmp_path / "browser-run"
    try:
        page.goto(f"{server}/adapters", wait_until="commit")
        page.get_by_role("textbox", name="Name (a new folder)").fill("browser-run")
        page.get_by_role("textbox", name=re.compile(r"^Pairs")).fill(str(pairs))
        page.get_by_role("textbox", name=re.compile(r"^Output folder")).fill(str(tmp_path))
        page.get_by_role("spinbutton", name="Steps", exact=True).fill("400")
        page.get_by_role("spinbutton", name="Batch size (pairs)", exact=True).fill("4")
        page.get_by_role("spinbutton", name="LoRA on the top k layers (0 = all)", exact=True).fill("1")
        page.get_by_role("button", name="Start training").click()
        page.get_by_role("heading", name="browser-run: running").wait_for(timeout=SLOW_MS)
        seen: set[str] = set()
        wait_for_step(page, 2, seen)  # two steps done: the stop keeps a checkpoint
        before = {p.split()[0] for p in seen if not p.startswith("training step")}
        assert before, f"no phase was shown before training: {sorted(seen)}"
        assert before <= {"starting", "reading", "loading", "tokenizing", "training", "evaluating"}, sorted(seen)
        print(f"phases shown before step 3: {sorted(before)}")
        page.get_by_role("button", name="Stop (a checkpoint is kept; resume it here)").click()
        page.get_by_role("heading", name="browser-run: stopped").wait_for(timeout=SLOW_MS)
        message = page.locator('[data-testid="stAlertContentWarning"]', has_text="Stopped after step").first
        message.wait_for(timeout=SLOW_MS)
        assert "Resume continues" in message.inner_text() and "--resume" not in message.inner_text()
        resume = page.get_by_role("button", name="Resume", exact=True)
        resume.wait_for(timeout=SLOW_MS)
        said, button = message.bounding_box(), resume.bounding_box()
        assert said and button
        beside = button["x"] > said["x"] + said["width"] - 1 and abs(
            (button["y"] + button["height"] / 2) - (said["y"] + said["height"] / 2)
        ) < max(said["height"], button["height"])
        assert beside, f"Resume at {button}, the run's message at {said}"
        assert not problems(page), problems(page)
        resume.click()
        page.get_by_role("heading", name="browser-run: running").wait_for(timeout=SLOW_MS)
        page.get_by_role("button", name="Stop (a checkpoint is kept; resume it here)").click()
        page.get_by_role("heading", name="browser-run: stopped").wait_for(timeout=SLOW_MS)
        assert not problems(page), problems(page)
    finally:
        stop_job(folder)
