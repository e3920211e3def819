"""The Cluster explorer with a 20,000-point synthetic corpus in a real browser (issue #28's scale target).

Two saved runs (``.npy`` + ``.json`` sidecars, as ``core.embed`` writes them) of 20,000 labelled synthetic texts,
the second with a few hundred texts moved to another topic, are opened through the page's URL (``compare=two
saved runs``): no model embeds anything. The corpus is seeded, so its UMAP layouts and neighbour table are
computed once into the server's disk cache (timed, in the test process, before the page opens: on a shared
2-core machine two 20,000-point UMAPs take longer than a page wait allows) and served from there afterwards.
The test prints and writes (``explorer_timings.txt`` beside the screenshots) that precomputation, the first visit
(k-means, V-measure, cluster names, plots of 20,000 points), a colouring change, the linked hover view and a
revisit. Times are printed, not asserted; the assertions are that the page works at this size.
"""

from __future__ import annotations

import json
import time
import urllib.parse

import numpy as np
import pytest

from tests.browser.test_workbench_browser import (  # noqa: F401 (fixtures)
    SHOTS,
    Control,
    browser_page,
    click_text,
    open_page,
    operate,
    page_url,
    problems,
    screenshot,
    server,
    wait_idle,
)

pytestmark = [pytest.mark.browser, pytest.mark.integration]

N_TEXTS, N_TOPICS, DIM, MOVED = 20_000, 20, 64, 400
WORDS = ["river", "violin", "tax", "volcano", "garden", "engine", "poem", "soccer", "bread", "planet",
         "court", "virus", "castle", "ocean", "market", "robot", "winter", "temple", "camera", "desert"]  # fmt: skip


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Run A: 20 topic clusters; run B: the same, with MOVED texts placed in the next topic (seeded)."""
    import pandas as pd

    folder = tmp_path_factory.mktemp("explorer20k")
    rng = np.random.default_rng(20_000)
    centres = rng.normal(size=(N_TOPICS, DIM)) * 3
    topic = np.arange(N_TEXTS) % N_TOPICS
    first = (centres[topic] + rng.normal(size=(N_TEXTS, DIM))).astype(np.float32)
    second = first + rng.normal(size=first.shape).astype(np.float32) * 0.3
    moved = rng.choice(N_TEXTS, MOVED, replace=False)
    second[moved] = centres[(topic[moved] + 1) % N_TOPICS] + rng.normal(size=(MOVED, DIM))
    texts = [f"note {i} about the {WORDS[t]} and its {WORDS[t]}s, seen {i % 7} times" for i, t in enumerate(topic)]
    pd.DataFrame({"text": texts, "label": [WORDS[t] for t in topic]}).to_csv(folder / "texts.csv", index=False)
    for name, matrix in (("run_a", first), ("run_b", second)):
        np.save(folder / f"{name}.npy", matrix)
        (folder / f"{name}.json").write_text(json.dumps({"input": str(folder / "texts.csv")}))
    return folder


def warm_server_caches(corpus) -> str:
    """Compute (or find) both UMAP layouts and the neighbour table in the server's disk cache; say how long."""
    import os
    from pathlib import Path

    from analysis.neighbours import neighbourhood_diff
    from analysis.projections import UmapSettings, project_umap, projection_key

    home = Path(os.environ["EMBEDDING_LENS_USER_HOME"])
    first, second = (np.load(corpus / f"{name}.npy") for name in ("run_a", "run_b"))
    cached = all((home / "projections" / f"{projection_key(m, UmapSettings())}.npy").is_file() for m in (first, second))
    started = time.perf_counter()
    for matrix in (first, second):
        project_umap(matrix, UmapSettings(), cache_dir=home / "projections")
    umap_seconds = time.perf_counter() - started
    started = time.perf_counter()
    diff = neighbourhood_diff(first, second, 10, cache_dir=home / "neighbours", use_cache=False)
    diff_seconds = time.perf_counter() - started
    neighbourhood_diff(first, second, 10, cache_dir=home / "neighbours")
    assert set(np.flatnonzero(diff.jaccard < 0.5)) and diff.jaccard.mean() < 1
    state = "already in the disk cache" if cached else "cold, numba JIT included"
    return (
        f"UMAP of both runs ({state}): {umap_seconds:.1f}; exact neighbour lists and diff, k=10, uncached: "
        f"{diff_seconds:.1f}"
    )


def test_twenty_thousand_points_stay_interactive(server, browser_page, corpus):  # noqa: F811
    page = browser_page
    query = urllib.parse.urlencode({"compare": "two saved runs", "run_a": str(corpus / "run_a.npy"),
                                    "run_b": str(corpus / "run_b.npy"), "texts": str(corpus / "texts.csv"),
                                    "label_col": "label", "colour": "neighbour overlap"})  # fmt: skip
    url = page_url(server, "cluster_explorer.py", "?" + query)
    precomputed = warm_server_caches(corpus)
    cold = open_page(page, url)
    main = page.locator('[data-testid="stMain"]')
    assert not problems(page), problems(page)
    assert f"{N_TEXTS} texts shown" in main.inner_text()
    assert page.locator('[data-testid="stPlotlyChart"]').count() == 2
    assert "Mean Jaccard@10" in main.inner_text()
    screenshot(page, SHOTS / "explorer_20k_overlap.png")
    recolour = operate(page, Control(click_text("UMAP and colouring", "k-means")))
    assert not problems(page), problems(page)
    linked = operate(page, Control(click_text("Linked view: both aligned layouts in one figure; hovering a text "
                                              "rings its twin (sends plotly.js again)")))  # fmt: skip
    frame = page.frame_locator("iframe").first
    frame.locator(".js-plotly-plot").first.wait_for(timeout=120_000)
    ringed = frame.locator("body").evaluate(
        """() => {
            const gd = document.querySelector('.js-plotly-plot');
            gd.emit('plotly_hover', {points: [{curveNumber: 0, pointNumber: 7}]});
            return [gd._fullData[2].x.length, gd._fullData[3].x[0] === gd._fullData[1].x[7]];
        }"""
    )
    assert ringed == [1, True], ringed
    assert not problems(page), problems(page)
    screenshot(page, SHOTS / "explorer_20k_linked.png")
    warm = open_page(page, url)
    assert not problems(page), problems(page)
    lines = [
        f"Cluster explorer, two saved runs of {N_TEXTS} texts x {DIM} dims ({MOVED} moved), seconds:",
        precomputed,
        f"first visit (layouts cached; k-means, V-measure, names, 2 x {N_TEXTS} points): paint {cold[0]:.2f}, "
        f"done {cold[1]:.2f}",
        f"colour by k-means: {recolour:.2f}",
        f"linked hover view on: {linked:.2f}",
        f"warm revisit (fresh session, disk caches): paint {warm[0]:.2f}, done {warm[1]:.2f}",
    ]
    (SHOTS / "explorer_timings.txt").write_text("\n".join(lines) + "\n")
    print("\n" + "\n".join(lines))
