"""Attribution in a real browser, on a loaded machine: the job finishes under its step cap and shows the verdict.

The server and browser of ``tests.browser.harness``: ``streamlit run`` on a free port with the real default model
and the shipped adapter, Debian's chromium driven by Playwright. Two CPU-bound processes run beside it for the
whole module (a shared machine); waits are generous and on visible states only.
Texts carry a fresh number so no earlier run's cached result answers (the job caches by inputs).
"""

from __future__ import annotations

import os
import re
import secrets
import time
import urllib.parse
import warnings
from collections.abc import Iterator

import pytest

from tests.browser.harness import (
    SHOTS,
    busy_machine,
    chromium_page,
    fresh_page,
    problems,
    stuck_page_report,
    workbench_server,
)

pytestmark = [pytest.mark.browser, pytest.mark.integration]

# A generous bound for the whole job at the default cap with two busy neighbours and the model loading in the
# job's own process (its quiet-machine time is measured by `python -m analysis.faithfulness.job_bench`).
FINISH_WITHIN_S = 900.0
LOG = "streamlit-attribution.log"


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with busy_machine(2), workbench_server(LOG, healthy_within=180) as url:
        yield url


@pytest.fixture(scope="module")
def tab(server) -> Iterator[list]:
    """The module's browser tab as a one-item list: :func:`open_attribution` puts a new tab in place of a stuck one,
    so later tests start from the tab that works."""
    with chromium_page(120_000) as page:
        yield [page]


def fresh_pair() -> tuple[str, str]:
    """Two 10-word sentences no earlier run has attributed (a number no run repeats).

    The number comes from the operating system, not from ``random``: other tests in the same process seed the global
    generator, so its draws repeat run after run and met the finished or stopped jobs an earlier run left in the
    user's cache (the page then showed that job instead of *Attribute*).
    """
    n = secrets.randbelow(10**6)
    return (
        f"The central bank raised interest rates again in year {n}.",
        f"Officials lifted borrowing costs once more during year {n}.",
    )


def open_attribution(tab: list, server: str, text_a: str, text_b: str):
    """Open the page on the two texts in ``tab[0]`` and wait for *Attribute* (the model loads first); the page that
    shows it (also left in ``tab[0]``).

    Twice in whole-suite runs under two busy neighbours a tab showed no *Attribute* for 10 minutes; in CI a reload of
    the same tab did not help. So after 5 minutes the stuck tab's state is reported as a warning (URL, text, console,
    server log, screenshot) and the page is opened once more in a new chromium process; a page that is really broken
    still fails there, with both reports. (One such CI failure was a repeated "fresh" number meeting an earlier run's
    finished job, see :func:`fresh_pair`; whether the earlier ones were the same is not known.)
    """
    from playwright.sync_api import TimeoutError as WaitTimeout

    query = urllib.parse.urlencode({"a": text_a, "b": text_b})
    reports = []
    for attempt in range(2):
        if attempt:
            tab[0] = fresh_page(tab[0].context.browser, 120_000, relaunch=True)
        page = tab[0]
        page.goto(f"{server}/attribution?{query}", wait_until="commit")
        try:
            page.get_by_role("button", name="Attribute", exact=True).wait_for(timeout=300_000)
            return page
        except WaitTimeout:
            reports.append(stuck_page_report(page, LOG, f"attribution_stuck_{attempt}.png"))
            warnings.warn(f"Attribution tab without *Attribute* after 5 minutes:\n{reports[-1]}", stacklevel=1)
    pytest.fail("No *Attribute* button in two tabs, 5 minutes each:\n\n" + "\n\n".join(reports))


def test_attribution_finishes_under_its_cap_and_shows_the_verdict(server, tab):
    text_a, text_b = fresh_pair()
    page = open_attribution(tab, server, text_a, text_b)
    main = page.locator('[data-testid="stMain"]')
    started = time.perf_counter()
    main.get_by_role("button", name="Attribute", exact=True).click()
    main.get_by_role("button", name="Stop", exact=True).wait_for(timeout=60_000)  # one Stop while it runs
    main.get_by_text(re.compile(r"IG base: (\d+ of \d+|done)")).first.wait_for(timeout=300_000)
    assert main.get_by_text(re.compile(r"Attribution running: (about \d+ s left|measuring|\d+ s past)")).count()
    verdict = main.get_by_text("Which explanation does the model follow?", exact=False)
    verdict.first.wait_for(timeout=FINISH_WITHIN_S * 1000)
    finished_after = time.perf_counter() - started
    page.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=60_000)
    text = main.inner_text()
    used = re.search(r"IG steps used \(cap (\d+) per text\): base: A (\d+), B (\d+); adapter: A (\d+), B (\d+)", text)
    assert used, text[:2000]
    cap, *steps = (int(g) for g in used.groups())
    assert all(0 < s <= cap for s in steps)  # the caption states the steps actually used, within the cap
    assert "Token pairs behind the cosine" in text and not main.get_by_role("button", name="Stop").count()
    unexpected = [p for p in problems(page) if "did not converge" not in p]  # an unconverged IG is said, in red
    assert not unexpected, unexpected
    load = os.getloadavg()[0]
    page.screenshot(path=str(SHOTS / "attribution_verdict.png"), full_page=True)
    (SHOTS / "attribution.txt").write_text(f"Attribute to verdict: {finished_after:.1f} s (load {load:.1f})\n")
    print(f"\nAttribute to verdict: {finished_after:.1f} s at load average {load:.1f}")
    assert finished_after < FINISH_WITHIN_S


def test_stop_ends_the_job_and_attribute_continues_it(server, tab):
    text_a, text_b = fresh_pair()
    page = open_attribution(tab, server, text_a, text_b)
    main = page.locator('[data-testid="stMain"]')
    main.get_by_role("button", name="Attribute", exact=True).click()
    main.get_by_text(re.compile(r"IG base: \d+ of \d+")).first.wait_for(timeout=300_000)
    main.get_by_role("button", name="Stop", exact=True).click()
    main.get_by_text("Attribution stopped", exact=False).first.wait_for(timeout=120_000)
    assert main.get_by_role("button", name="Attribute (finished parts are kept)").is_visible()
    assert not problems(page), problems(page)
