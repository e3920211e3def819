"""Numbers a researcher can trust (issue 32), in a real browser: the Clustering quality table carries ± and n, the
Cluster explorer's k follows an uploaded file's label count, its downloads carry the file's name, and a .txt
upload gets a label-free score.

Same server and browser fixtures as ``test_workbench_browser`` (Debian's chromium via Playwright, the real default
model). Every wait is on a visible state (the app idle, a text shown, a download started), with generous limits,
so the test holds with other CPU-bound processes on the machine; no fixed sleeps.
"""

from __future__ import annotations

import csv
import io
import re

import pytest

from tests.app.test_numbers_pages import write_cells
from tests.browser.test_workbench_browser import (  # noqa: F401 (fixtures)
    SHOTS,
    browser_page,
    main_text,
    open_page,
    page_url,
    problems,
    screenshot,
    server,
    wait_idle,
)

pytestmark = [pytest.mark.browser, pytest.mark.integration]

LONG = 900_000  # ms: a cold embedding on a loaded 2-core machine
TOPICS = {
    "sport": "The team won the football match with a late goal",
    "food": "She baked fresh bread and cooked a warm vegetable soup",
    "music": "The band played guitar songs at the evening concert",
    "weather": "Heavy rain and strong wind are expected tomorrow morning",
}


def wait_text(page, pattern: str, timeout: float = LONG) -> None:
    page.locator('[data-testid="stMain"]').get_by_text(re.compile(pattern)).first.wait_for(timeout=timeout)
    wait_idle(page, timeout=timeout / 1000)


def download_text(page, button: str) -> tuple[str, str]:
    """(suggested file name, content) of the first download button named ``button``."""
    with page.expect_download(timeout=120_000) as event:
        page.get_by_role("button", name=button, exact=True).first.click()
    download = event.value
    return download.suggested_filename, open(download.path(), encoding="utf-8").read()


def upload(page, path) -> None:
    page.get_by_text("upload a file", exact=True).first.click()
    wait_idle(page)
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(path))


def quality_cells(folder) -> None:
    """Cells of constructed blobs with stored replicates (base and adapter) and one old cell (MiniLM)."""
    write_cells(folder, {"m": 1.0, "m+a": 3.0, "minilm": 0.3}, with_replicates=("m", "m+a"))


def test_the_quality_table_carries_plus_minus_and_n(server, browser_page, tmp_path):  # noqa: F811
    page = browser_page
    quality_cells(tmp_path)
    open_page(page, page_url(server, "clustering_quality.py", "?model=smollm2-135m"))
    box = page.get_by_role("textbox", name="Results folder", exact=True)
    box.fill(str(tmp_path))
    box.press("Enter")
    wait_text(page, r"^3 rows of 3")
    assert not problems(page), problems(page)
    assert "model=smollm2-135m" in page.url  # the page draws no sidebar but keeps the model in the URL
    _name, content = download_text(page, "table CSV")
    rows = {row["variant"]: row for row in csv.DictReader(io.StringIO(content))}
    assert re.fullmatch(r"0\.\d{4} ± 0\.\d{4}", rows["m+a"]["average ±"]), rows["m+a"]
    assert rows["m+a"]["n texts"] == "120" and rows["minilm"]["spread"].startswith("k-means seeds")
    assert " ± " in rows["m+a"]["vs base ±"] and rows["m+a"]["within noise of best"] == "True"
    screenshot(page, SHOTS / "scenario_quality_uncertainty.png")


def test_k_follows_an_upload_and_downloads_carry_its_name(server, browser_page, tmp_path):  # noqa: F811
    page = browser_page
    path = tmp_path / "my-topics.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for n in range(10):
            for label, text in TOPICS.items():
                writer.writerow([f"{text}, note {n}.", label])
    open_page(page, page_url(server, "cluster_explorer.py", "?task=trec-coarse"))
    upload(page, path)
    # 40 texts embed without a click; the silhouette's label names k: the upload's 4 labels, not trec-coarse's 6.
    wait_text(page, r"Silhouette \(base, k-means k=4\)")
    assert not problems(page), problems(page)
    text = main_text(page)
    assert "V-measure (base)" in text and "silhouette n = 40 texts" in text
    assert "task=" not in page.url  # the URL no longer names the previous task
    name, content = download_text(page, "points CSV")
    assert "my-topics" in name and re.search(r"[0-9a-f]{16}", name) is None, name
    assert content.startswith("x,y,text,label,kmeans")
    screenshot(page, SHOTS / "scenario_upload_k.png")


def test_a_txt_upload_gets_a_label_free_score(server, browser_page, tmp_path):  # noqa: F811
    page = browser_page
    path = tmp_path / "plain-lines.txt"
    path.write_text("\n".join(f"{text}, line {n}." for n in range(6) for text in TOPICS.values()) + "\n")
    open_page(page, page_url(server, "cluster_explorer.py"))
    upload(page, path)
    wait_text(page, r"Silhouette \(base, k-means k=8\)")
    assert not problems(page), problems(page)
    text = main_text(page)
    assert "plain-lines.txt: 24 texts, one per line, no labels." in text and "V-measure" not in text
    bad = tmp_path / "notes.docx"
    bad.write_bytes(b"not a table")
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(bad))
    wait_text(page, r"unsupported file type '\.docx'")
    screenshot(page, SHOTS / "scenario_upload_txt.png")
