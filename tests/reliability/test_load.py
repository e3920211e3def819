"""Interactive work beside CPU-bound processes: a page's control finishes, and torch's threads sleep while they wait.

How much it slows is measured by ``scripts/bench_under_load.py`` (ratios per OpenMP setting), not here: a shared
test machine's own load makes a timed assertion a coin toss. This case checks the two things that keep the slowdown
in proportion: the app, however started, loads torch's OpenMP runtime with passive waits (no spinning at barriers:
``GOMP_SPINCOUNT`` 0, as the runtime itself reports), and the Attribution control ends with its result beside two
busy processes.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.reliability.cases import Case, cases

REPO = Path(__file__).resolve().parents[2]


def spin() -> None:
    while True:
        pass


def openmp_settings_of_the_app(env: dict[str, str]) -> str:
    """What OpenMP reports when ``workbench/app.py`` loads torch in a fresh process (``OMP_DISPLAY_ENV``)."""
    app = REPO / "workbench" / "app.py"
    run_app = f"import runpy\ntry:\n    runpy.run_path({str(app)!r})\nexcept BaseException:\n    pass"
    environment = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    environment.update({"PYTHONPATH": str(REPO), "OMP_DISPLAY_ENV": "VERBOSE", **env})
    done = subprocess.run([sys.executable, "-c", run_app], env=environment, capture_output=True, text=True, timeout=300)
    return done.stderr


@cases(
    Case(
        "busy-attribution",
        "the Attribution page's *Attribute* pressed while two CPU-bound processes run beside the app",
        "the attributions (cosines, bars, token pairs), slowed in proportion to the CPU left: torch's threads sleep "
        "while they wait instead of spinning (`scripts/bench_under_load.py` prints the ratios)",
        "the attribution job's folder under the cache root (its results, by inputs)",
        "concurrency",
    ),
)
def test_a_page_control_beside_two_busy_processes(case, tiny_model_dir, tmp_path):
    from streamlit.testing.v1 import AppTest

    from tests.app.test_app import APP
    from workbench.state import CUSTOM_MODEL, NO_ADAPTER

    reported = openmp_settings_of_the_app({})
    assert "OMP_WAIT_POLICY = 'PASSIVE'" in reported and "GOMP_SPINCOUNT = '0'" in reported, reported[-2000:]
    kept = openmp_settings_of_the_app({"OMP_WAIT_POLICY": "ACTIVE"})  # the user's own choice stands
    assert "OMP_WAIT_POLICY = 'ACTIVE'" in kept, kept[-2000:]

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
        next(s for s in app.select_slider if s.label.startswith("IG step cap")).set_value(64).run()
        next(b for b in app.button if b.label == "Attribute").click().run()
        deadline = time.time() + 600
        while not app.metric and not app.exception and time.time() < deadline:  # the job runs in its own process
            time.sleep(1.0)
            app.run()  # the watching page's run: progress, and the heartbeat that keeps the job going
    finally:
        for process in busy:
            process.kill()
    assert not app.exception and not app.error, (app.exception, app.error)
    assert [m.label for m in app.metric] == ["cosine (base)"]
    assert any("convergence delta" in c.value for c in app.caption)
