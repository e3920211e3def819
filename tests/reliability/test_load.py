"""Interactive work beside CPU-bound processes: a page's control finishes, using the cores the others leave free.

How much it slows is measured by ``scripts/bench_under_load.py`` (ratios per torch thread setting), not here: a
shared test machine's own load makes a timed assertion a coin toss. This case checks the behaviour that keeps the
slowdown in proportion: the app fits torch's threads to the free cores (one, beside two busy processes on two
cores) before the control runs, and the control ends with its result.
"""

from __future__ import annotations

import multiprocessing
import os
import time

from tests.reliability.cases import Case, cases


def spin() -> None:
    while True:
        pass


@cases(
    Case(
        "busy-attribution",
        "the Attribution page's *Attribute* pressed while two CPU-bound processes run beside the app",
        "the attributions (cosines, bars, token pairs), slowed in proportion to the CPU left (one torch thread per "
        "free core; `scripts/bench_under_load.py` prints the ratios)",
        "nothing: the page's result in the session only",
        "concurrency",
    ),
)
def test_a_page_control_beside_two_busy_processes(case, tiny_model_dir, monkeypatch):
    import torch
    from streamlit.testing.v1 import AppTest

    from analysis.attribution import integrated_gradients
    from tests.app.test_app import APP
    from workbench.state import CUSTOM_MODEL, NO_ADAPTER

    used: list[int] = []  # torch's threads in the script's own thread, where the control runs

    def recording(*args, _real=integrated_gradients.compare_similarity, **kwargs):
        used.append(torch.get_num_threads())
        return _real(*args, **kwargs)

    monkeypatch.setattr(integrated_gradients, "compare_similarity", recording)
    cores = len(os.sched_getaffinity(0))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(max(cores, 2))))  # the 2-core machine
    torch.set_num_threads(2)  # as a fresh server starts on two cores
    context = multiprocessing.get_context("fork")
    busy = [context.Process(target=spin, daemon=True) for _ in range(2)]
    for process in busy:
        process.start()
    try:
        time.sleep(0.5)  # both runnable before the click
        app = AppTest.from_file(APP, default_timeout=600)
        app.session_state["model_pick"] = CUSTOM_MODEL
        app.session_state["model_custom"] = str(tiny_model_dir)
        app.session_state["adapter_pick"] = NO_ADAPTER
        app.run()
        app.switch_page("../pages/attribution.py").run()
        assert not app.exception, app.exception
        next(s for s in app.select_slider if s.label.startswith("Step cap")).set_value(64).run()
        next(b for b in app.button if b.label == "Attribute").click().run()
    finally:
        for process in busy:
            process.kill()
        torch.set_num_threads(1)  # the suite's setting (tests/conftest.py)
    assert not app.exception and not app.error, (app.exception, app.error)
    assert [m.label for m in app.metric] == ["cosine (base)"]
    assert used == [1], f"the control ran on {used} torch threads beside two busy processes on two cores"
